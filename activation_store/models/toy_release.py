"""Turn a trained toy ViT into a release: held-out accuracy, register probes and ablation, weights + model card."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from visae.activation_store.models.toy import wrap_toy
from visae.activation_store.models.toy_probes import probe_table, register_ablation
from visae.activation_store.models.toy_training import ToyTrainConfig, factor_accuracy
from visae.activation_store.models.toy_vit import TOY_VERSION, ToyViT, save_toy_vit
from visae.activation_store.sources.shapes import ShapesSource
from visae.core.atomic import write_atomic
from visae.core.file_hash import file_sha256

PROBE_HOOK = "blocks.-2.resid_post"
PROBE_SEED_OFFSET = 2_000
TARGET_ACCURACY = 0.95
TARGET_PATCH_ACCURACY = {"shape": 0.90, "colour": 0.90}  # on the patches an object covers


def write_toy_release(module: ToyViT, cfg: ToyTrainConfig, record: dict, out_dir: str | Path,
                      name: str = "toy-vit-shapes", probe_images: int = 3000) -> tuple[Path, Path]:
    """Evaluate, then write `<name>.safetensors` (accuracy in its metadata) and the model card `<name>.md`."""
    out_dir = Path(out_dir)
    accuracy = factor_accuracy(module, cfg.held_out_spec())
    weights = save_toy_vit(module, out_dir / f"{name}.safetensors", extra={
        "version": str(TOY_VERSION), "held_out_accuracy": json.dumps(accuracy["image"]),
        "held_out_patch_accuracy": json.dumps(accuracy["patch"]), "held_out_spec": cfg.held_out_spec(),
        "train_spec": cfg.train_spec(), "seed": str(cfg.seed)})
    model = wrap_toy(f"visae:{name}", module)
    probe_spec = f"shapes:n={probe_images},seed={cfg.seed + PROBE_SEED_OFFSET},size={cfg.image_size}"
    probes = probe_table(model, ShapesSource.from_spec(probe_spec), PROBE_HOOK)
    ablation_source = ShapesSource.from_spec(cfg.held_out_spec())
    ablations = {hook: register_ablation(model, ablation_source, hook) for hook in ablation_hooks(module.cfg.depth)}
    card = model_card(name, module, cfg, record, accuracy, weights, probe_spec, probes, ablations)
    card_path = out_dir / f"{name}.md"
    write_atomic(card_path, card)
    return weights, card_path


def ablation_hooks(depth: int) -> list[str]:
    """An early and a middle block, where register tokens have had one or a few blocks to gather information."""
    return list(dict.fromkeys(f"blocks.{b}.resid_post" for b in (min(1, depth - 1), depth // 2)))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def probe_summary(probes: dict) -> str:
    """One line per factor: where a linear probe reads it best, and how registers compare with CLS."""
    lines = []
    for factor in next(iter(probes.values())):
        best = max(probes, key=lambda k: probes[k][factor])
        gap = probes["registers"][factor] - probes["cls"][factor]
        lines.append(f"- `{factor}`: best read from {best} ({probes[best][factor]:.1%}); "
                     f"registers {'+' if gap >= 0 else '−'}{abs(gap):.1%} vs CLS")
    return "\n".join(lines)


def patch_section(patch: dict[str, float]) -> str:
    """The patch heads' held-out accuracy, each on the patches it is asked about, and the verdict on the targets."""
    asked = {"background": "patches no object covers (the background type)",
             "segmentation": "every patch (`shape` head, background as a fifth class)"}
    rows = [[f"`{k}`", asked.get(k, "patches an object covers"), f"{a:.2%}"] for k, a in patch.items()]
    short = [f"`{f}` ({patch[f]:.1%})" for f, t in TARGET_PATCH_ACCURACY.items() if patch[f] < t]
    verdict = (f"Below the patch-level target: {', '.join(short)}." if short else
               "Shape and colour reach the 90% patch-level target on the patches an object covers.")
    return f"""Patch heads (one linear classifier per factor applied to every final patch token):

{table(["patch head", "scored on", "accuracy"], rows)}

{verdict}"""


def model_card(name: str, module: ToyViT, cfg: ToyTrainConfig, record: dict, accuracy: dict, weights: Path,
               probe_spec: str, probes: dict, ablations: dict) -> str:
    m = module.cfg
    patch = accuracy["patch"]
    accuracy = accuracy["image"]
    patch_heads = f"; one linear head per factor in {list(module.patch_heads)} on every patch token" * m.patch_heads
    patch_targets = ("; every patch predicts the factors of the object covering most of it (the `shapes` patch "
                     "labels) or, uncovered, the background type") * m.patch_heads
    n_params = sum(p.numel() for p in module.parameters())
    grid = m.img_size // m.patch_size
    kinds = list(probes)
    factor_rows = [[f, str(len(v)), ", ".join(v), f"{accuracy[f]:.2%}"] for f, v in m.factor_values.items()]
    probe_rows = [[f] + [f"{probes[k][f]:.1%}" for k in kinds] for f in m.factor_values]
    ablation_rows = [[f] + [f"{a['changed'][f]:.1%} / {a['kl'][f]:.1e}" for a in ablations.values()]
                     for f in m.factor_values]
    train = {k: v for k, v in asdict(cfg).items() if k != "model"}
    short = [f"`{f}` ({a:.1%})" for f, a in accuracy.items() if a < TARGET_ACCURACY]
    verdict = (f"Below the {TARGET_ACCURACY:.0%} target: {', '.join(short)}." if short
               else f"Every factor reaches the {TARGET_ACCURACY:.0%} target.")
    return f"""# {name}

visae's shipped toy vision transformer: a small timm `VisionTransformer` with a CLS token and {m.reg_tokens} register
tokens, trained to read every ground-truth factor of the generated `shapes` scenes. Load it with
`activation_store.models.load_model("visae:{name}")`; its forward returns a dict factor -> logits.

Version {TOY_VERSION}: {"CLS heads plus per-patch heads" if m.patch_heads else "CLS heads only"}.

## Architecture
- timm `VisionTransformer`: {m.img_size}×{m.img_size} px input, {m.patch_size} px patches ({grid}×{grid} grid),
  embed dim {m.embed_dim}, {m.depth} blocks, {m.num_heads} heads, MLP ratio {m.mlp_ratio}, pre-norm, learned positions.
- Tokens: [CLS, {m.reg_tokens} registers, {grid * grid} patches] = {1 + m.reg_tokens + grid * grid} tokens.
- One linear head per factor on the final (normed) CLS token{patch_heads}. {n_params:,} parameters.
- Preprocessing: RGB, no resize at {m.img_size} px, scaled to [0, 1], normalised with mean {m.mean}, std {m.std}.
- Weights: `{weights.name}`, {weights.stat().st_size / 1e6:.2f} MB, sha256 `{file_sha256(weights)}`.

## Training
- Data: `{cfg.train_spec()}`: a fresh image every sample (no image seen twice); the heads predict the primary
  (largest) object's factors plus the object count and the background{patch_targets}.
- Settings: {json.dumps(train)}.
- AdamW, linear warm-up then cosine decay, gradient clipping; deterministic on CPU
  (`torch.manual_seed({cfg.seed})`, `torch.use_deterministic_algorithms(True)`, {cfg.threads} thread(s)).
- Reproduce: `visae zoo train-toy --seed {cfg.seed} --steps {cfg.steps} --threads {cfg.threads}`.
- Training time: {record['train_seconds'] / 60:.1f} min on {platform.machine()} CPU ({os.cpu_count()} cores); final
  training loss {record['final_loss']:.3f} (sum over the heads).

## Held-out accuracy
On `{cfg.held_out_spec()}` (a seed never used in training):

{table(["factor", "classes", "values", "accuracy"], factor_rows)}

{verdict}

{patch_section(patch) if patch else ""}

## What the register tokens carry (a first look)
Ridge-regression linear probes (closed form, standardised features) per factor at `{PROBE_HOOK}`, fitted on 2/3 of
`{probe_spec}` and scored on the remaining third. `registers` concatenates the {m.reg_tokens} register tokens;
`register_j` is one alone; `patch_mean` is the mean over patch tokens.

{table(["factor"] + kinds, probe_rows)}

{probe_summary(probes)}

Mean-ablating the register tokens (each replaced by its mean over the held-out images) changes the predictions
(share of images whose predicted class changes / mean KL(clean ‖ ablated) in nats):

{table(["factor"] + [f"at `{h}`" for h in ablations], ablation_rows)}

torch {torch.__version__}.
"""
