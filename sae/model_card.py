"""The README.md model card of a visae Hub repo: YAML front matter plus a table of every SAE."""

from __future__ import annotations

from typing import Any

import yaml

FVU_NOTE = (
    "FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 with the per-dimension mean over the evaluation tokens "
    "(visae docs/metrics.md); L0 = mean active latents per token; dead = fired on none of the evaluation tokens."
)


def hub_base_model(model_spec: str | None) -> str | None:
    """The Hub repo id of a visae model spec, where one exists (timm and open_clip hf-hub models)."""
    if not model_spec:
        return None
    if model_spec.startswith("timm:"):
        return "timm/" + model_spec.removeprefix("timm:")
    if model_spec.startswith("open_clip:hf-hub:"):
        return model_spec.removeprefix("open_clip:hf-hub:")
    return None


def _figure(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _fvus(entry: dict[str, Any]) -> str:
    per_hook = entry.get("fvu_per_hook") or {}
    return ", ".join(f"{hook} {_figure(fvu, '.4f')}" for hook, fvu in per_hook.items()) or "–"


def _reads_and_writes(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(hooks read, hooks written, widths) of a transcoder or crosscoder manifest entry."""
    if entry["kind"] == "transcoder":
        return (f"`{entry.get('hook_name') or '–'}`", f"`{entry.get('hook_name_out') or '–'}`",
                f"d_in {entry['d_in']}, d_out {entry.get('d_out')}, {entry['d_sae']} latents")
    hooks = ", ".join(f"`{hook}`" for hook in entry.get("hook_names") or [])
    return hooks, f"each of {hooks}", f"{' + '.join(map(str, entry['hook_dims']))}, {entry['d_sae']} latents"


def multi_hook_section(saes: dict[str, dict[str, Any]]) -> str:
    """The card's table of transcoders (one hook read, another predicted) and crosscoders (several hooks read and
    reconstructed through shared latents); empty when the repo holds SAEs only."""
    rows = [f"| `{sae_id}` | {s['kind']} | {' | '.join(_reads_and_writes(s))} | {s.get('k') or '–'} | {_fvus(s)} |"
            for sae_id, s in sorted(saes.items()) if s.get("kind") in ("transcoder", "crosscoder")]
    if not rows:
        return ""
    return f"""
## Transcoders and crosscoders

A transcoder reads one hook and predicts another (`cfg.json` adds `d_out`; SAELens's transcoder format); a
crosscoder reads several hooks, each with its own encoder and decoder, its latents shared (`hook_dims`, and
`hook_profile.safetensors`: each latent's decoder norm at each hook). FVU is measured at the hooks written.

| SAE id | kind | reads | writes | widths | k | FVU per hook |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def render_model_card(repo_id: str, manifest: dict[str, Any], base_model: str | None = None) -> str:
    saes = manifest["saes"]
    models = sorted({s.get("model_name") for s in saes.values() if s.get("model_name")})
    base = base_model or next((b for b in map(hub_base_model, models) if b), None)
    front = {
        "library_name": "visae",
        "tags": sorted({"visae", "sparse-autoencoder", "interpretability", "vision"}
                       | {s["architecture"] for s in saes.values()}),
    }
    if base:
        front["base_model"] = base
    rows = "\n".join(
        f"| `{sae_id}` | {s['architecture']} | {s.get('model_name') or '–'} | {s.get('hook_name') or '–'} "
        f"| {s.get('token_kind') or '–'} | {s['d_sae']} | {_figure(s.get('fvu'), '.4f')} "
        f"| {_figure(s.get('l0'), '.1f')} "
        f"| {_figure(s.get('dead_fraction'), '.3f')} | {_figure(s.get('training_tokens'), ',')} |"
        for sae_id, s in sorted(saes.items())
    )
    example = sorted(saes)[0]
    return f"""---
{yaml.safe_dump(front, sort_keys=True).strip()}
---

# Sparse autoencoders: {repo_id}

Sparse autoencoder (SAE) dictionaries for vision models{' (' + ', '.join(models) + ')' if models else ''}, trained and
published with visae. Each SAE id is a folder in SAELens's format (`cfg.json`,
`sae_weights.safetensors`, optionally `sparsity.safetensors`); `visae_manifest.json` lists every SAE with its
figures and the sha256 of each file.

| SAE id | architecture | model | hook | tokens | latents | FVU | L0 | dead fraction | training tokens |
|---|---|---|---|---|---|---|---|---|---|
{rows}

{FVU_NOTE}
{multi_hook_section(saes)}
## Load

```python
from visae.sae import SAE
sae = SAE.from_pretrained("{repo_id}", "{example}")
z = sae.encode(activations)  # raw activations at the hook, [tokens, d_in]
```

or from the command line: `visae pull {repo_id} {example}`. The folders also load in SAELens
(`sae_lens.SAE.load_from_disk(folder)`) after downloading them.
"""
