"""Interventions on a dictionary's latents inside the real forward pass (docs/metrics.md, "Causal effects").

At the dictionary's hook, for the tokens it reads, the activation x becomes x − decode(z) + decode(z'): z is the
SAE's code of x and z' the edited code, with ablated latents set to zero and steered latents clamped to
scale × their typical maximum on every token. The SAE's reconstruction error stays in the residual, so an empty
edit leaves the forward pass exactly as it was.

    result = intervene(model, sae, images, ablate=[17], steer={42: 4.0}, typical_max=typical_maxima(results))
    result.summary["heads"]["shape"]["flips"], result.before["shape"], result.after["shape"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from visae.eval.downstream import token_splice
from visae.eval.output_reader import OutputReader

CodeEdit = Callable[[torch.Tensor], torch.Tensor]  # codes [B, T, d_sae] -> edited codes of the same shape


@dataclass
class InterventionResult:
    hook: str
    edit: dict  # {"ablate": [latents], "steer": {latent: {"scale": s, "value": clamped activation}}}
    before: dict[str, torch.Tensor]  # raw outputs of the clean pass: logits per head, or the image embedding
    after: dict[str, torch.Tensor]  # the same with the edit spliced in
    summary: dict  # OutputReader.compare(before, after)
    reader: OutputReader

    def predictions(self, image: int = 0, n: int = 3) -> dict[str, dict[str, list[dict]]]:
        """The n most probable outputs of each scored head for one image, before and after the edit."""
        return {"before": self.reader.predictions(self.before, image, n),
                "after": self.reader.predictions(self.after, image, n)}


def typical_maxima(results) -> np.ndarray:
    """Each latent's typical maximum: the median activation over its top images in eval results (0 if it never
    fired), the unit `steer` scales are in."""
    acts = np.where(results.top["top_images"] >= 0, results.top["top_acts"], np.nan).astype(np.float64)
    fired = np.isfinite(acts).any(1)
    out = np.zeros(len(acts))
    out[fired] = np.nanmedian(acts[fired], axis=1)
    return out


def reconstructs_its_hook(sae) -> bool:
    """Whether the dictionary decodes into the hook it reads (an SAE), so its code can be edited in place."""
    return type(sae).traits.kind == "sae"


def intervention_target(model, sae, hook: str | None = None) -> tuple[str, list[int]]:
    """The canonical hook and the token positions an intervention edits, refusing a hook the dictionary was not
    trained on and a dictionary that does not reconstruct its own input."""
    if not reconstructs_its_hook(sae):
        raise ValueError(f"interventions edit a dictionary that reconstructs its hook; this is a "
                         f"{type(sae).traits.kind} ({sae.cfg.architecture}), whose decoder writes elsewhere")
    meta = sae.cfg.metadata or {}
    trained = meta.get("hook_name")
    if trained is None and hook is None:
        raise ValueError("the dictionary records no hook_name; pass the hook it was trained on (hook=...)")
    target = model.canonical(trained or hook)
    if hook is not None and model.canonical(hook) != target:
        raise ValueError(f"the dictionary was trained on {trained}, not {hook}; intervene at {trained}")
    if model.hook_dim(target) != sae.cfg.d_in:
        raise ValueError(f"the dictionary reads d_in={sae.cfg.d_in} but {target} of {model.spec} has "
                         f"d={model.hook_dim(target)}; use the model the dictionary was trained on")
    return target, list(model.layout.indices(meta.get("token_kind") or "all"))


def check_latents(latents, d_sae: int) -> None:
    for latent in latents:
        if not 0 <= int(latent) < d_sae:
            raise ValueError(f"latent {latent} is out of range; this dictionary has {d_sae} latents, 0..{d_sae - 1}")


def code_edit_splice(sae, token_index: Sequence[int], edit: CodeEdit):
    """A splice function replacing x by x − decode(z) + decode(edit(z)) on the tokens at `token_index`."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(sae.W_dec.device)
        z = sae.encode(flat).reshape(*x.shape[:-1], -1)
        return x + (sae.decode(edit(z)) - sae.decode(z)).to(x.device, x.dtype)

    return token_splice(token_index, transform)


def latent_edit(ablate: Sequence[int], clamp: Mapping[int, float]) -> CodeEdit:
    """Zero the `ablate` latents and set each `clamp` latent to its value, on every token."""
    ablated = torch.as_tensor(list(ablate), dtype=torch.long)
    clamped = torch.as_tensor(list(clamp), dtype=torch.long)
    values = torch.as_tensor(list(clamp.values()), dtype=torch.float32)

    def edit(z: torch.Tensor) -> torch.Tensor:
        out = z.clone()
        out[..., ablated.to(z.device)] = 0
        out[..., clamped.to(z.device)] = values.to(z.device, z.dtype)
        return out

    return edit


def steer_values(steer: Mapping[int, float], typical_max) -> dict[int, float]:
    """Clamp value of each steered latent: its scale × its typical maximum (an array over latents or a mapping)."""
    if not steer:
        return {}
    if typical_max is None:
        raise ValueError("steering needs each latent's typical maximum: pass typical_max=typical_maxima("
                         "EvalResults.load(sae_dir)) or a {latent: activation} mapping")
    out = {}
    for latent, scale in steer.items():
        peak = typical_max.get(latent) if isinstance(typical_max, Mapping) else float(typical_max[latent])
        if not peak:
            raise ValueError(f"latent {latent} has no typical maximum (it never fired in the evaluation); give "
                             "its activation in typical_max={latent: value}")
        out[int(latent)] = float(scale) * peak
    return out


@torch.no_grad()
def intervene(model, sae, images, ablate: Sequence[int] = (), steer: Mapping[int, float] | None = None, *,
              typical_max=None, hook: str | None = None, vocabulary: list[str] | None = None,
              reader: OutputReader | None = None, top: int = 5) -> InterventionResult:
    """Run `images` (preprocessed pixels [B, 3, H, W] or PIL images) through `model` clean and with the edit
    spliced in at the dictionary's hook: `ablate` latents zeroed, `steer` latents clamped to scale × typical_max.

    The summary follows the model family (`OutputReader`): per classifier head, prediction flips, KL and the
    classes most promoted and suppressed; for CLIP towers the same over zero-shot scores of `vocabulary`."""
    steer = dict(steer or {})
    check_latents([*ablate, *steer], int(sae.cfg.d_sae))
    target, tokens = intervention_target(model, sae, hook)
    clamp = steer_values(steer, typical_max)
    pixels = images if isinstance(images, torch.Tensor) else model.preprocess.batch(_rgb(images))
    pixels = pixels.to(model.device)
    reader = reader or OutputReader(model, vocabulary)
    before = reader.heads(model.forward(pixels))
    with model.splice(target, code_edit_splice(sae, tokens, latent_edit(ablate, clamp))):
        after = reader.heads(model.forward(pixels))
    edit = {"ablate": [int(j) for j in ablate],
            "steer": {int(j): {"scale": float(steer[j]), "value": clamp[int(j)]} for j in steer}}
    return InterventionResult(hook=target, edit=edit, before=before, after=after,
                              summary=reader.compare(before, after, top), reader=reader)


def _rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    return [im.convert("RGB") for im in images]
