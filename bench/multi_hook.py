"""Issue 13's quality targets for transcoders and crosscoders on the shipped toy model: one JSON object.

The toy model (`visae:toy-vit-shapes`) is harvested on `--n-images` `shapes` images (all 69 tokens) at block
`--block`'s MLP input and output and at three residual layers; then, each on `--tokens` training tokens with the
recipe's defaults:
- a TopK transcoder and a TopK skip transcoder (mlp_in -> mlp_out, 16x width, k = 32): the output hook's FVU and
  dead fraction from the closing evaluation, and, through `visae eval` on held-out images, the spliced replacement's
  % recovered against zero-ablation (targets: FVU <= 0.10, dead < 1%, % recovered >= 95%; the skip transcoder's
  FVU at least 20% below the plain one's);
- a crosscoder over the three residual layers (16x the per-layer width, k = 32) against three separate per-layer
  TopK SAEs of the same total width and L0 (each a third of the latents, k = round(32 / 3)): each layer's FVU and
  the crosscoder-to-SAE ratio (target: <= 1.5).
Speed (the 1.3x target) is `bench/train.py`'s.

    python bench/multi_hook.py [--out DIR] [--tokens 4e6] [--n-images 2048] [--block 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.training.config import TrainConfig
from visae.training.run import train

MODEL = "visae:toy-vit-shapes"
WIDTH, K = 16, 32
HELD_OUT = "shapes:n=512,seed=1000"  # the toy model's held-out seed: seen neither by it nor by the dictionaries


def metadata(sae_dir: Path) -> dict:
    return json.loads((sae_dir / "cfg.json").read_text())["metadata"]


def run(store: str, out: Path, tokens: int, name: str, **settings) -> dict:
    cfg = TrainConfig(store=store, total_tokens=tokens, out_dir=str(out), run_name=name, wandb_mode="disabled",
                      **settings)
    return metadata(train(cfg))


def spliced_recovery(sae_dir: Path) -> float | None:
    """% recovered of the spliced replacement against zero-ablation (mean over the toy heads), from `visae eval`
    on held-out images; None when eval reports no downstream figure for this dictionary."""
    from visae.eval.config import EvalConfig
    from visae.eval.evaluate import evaluate

    evaluate(EvalConfig(sae_dir=str(sae_dir), model=MODEL, images=HELD_OUT, progress=False, effect_latents=0))
    downstream = json.loads((sae_dir / "eval" / "summary.json").read_text()).get("downstream") or {}
    return downstream.get("mean_over_heads", {}).get("recovered_vs_zero")


def transcoders(store: str, out: Path, tokens: int, block: int) -> dict:
    hooks = {"hook": f"blocks.{block}.mlp_in", "out_hook": f"blocks.{block}.mlp_out"}
    result = {}
    for arch in ("topk_transcoder", "topk_skip_transcoder"):
        meta = run(store, out, tokens, arch, architecture=arch, k=K, expansion_factor=WIDTH, **hooks)
        result[arch] = {"fvu": meta["fvu"], "l0": meta["l0"], "dead_fraction": meta["dead_fraction"],
                        "recovered_vs_zero": spliced_recovery(out / arch / "sae")}
    plain, skip = result["topk_transcoder"]["fvu"], result["topk_skip_transcoder"]["fvu"]
    result["skip_fvu_reduction"] = 1 - skip / plain
    return result


def crosscoder(store: str, out: Path, tokens: int, layers: list[str], d: int) -> dict:
    width = WIDTH * d * len(layers)
    cross = run(store, out, tokens, "crosscoder", architecture="crosscoder", hook=layers[0],
                cross_hooks=layers[1:], d_sae=width, k=K)
    per_layer_k = round(K / len(layers))
    separate = {hook: run(store, out, tokens, f"sae-{hook}", hook=hook, d_sae=width // len(layers),
                          k=per_layer_k)["fvu"] for hook in layers}
    fvu = {hook: figures["fvu"] for hook, figures in cross["eval_summary"]["per_hook"].items()}
    return {"d_sae": width, "k": K, "dead_fraction": cross["dead_fraction"], "fvu_per_hook": fvu,
            "separate_saes": {"d_sae_each": width // len(layers), "k_each": per_layer_k, "fvu": separate},
            "ratio_to_separate": {hook: fvu[hook] / separate[hook] for hook in layers}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--tokens", type=float, default=4e6)
    p.add_argument("--n-images", type=int, default=2048)
    p.add_argument("--block", type=int, default=2)
    p.add_argument("--parts", nargs="+", default=["transcoders", "crosscoder"], choices=["transcoders", "crosscoder"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="visae-multi-hook-") as tmp:
        out = Path(args.out or tmp)
        layers = [f"blocks.{i}.resid_post" for i in (args.block - 1, args.block, args.block + 1)]
        hooks = [f"blocks.{args.block}.mlp_in", f"blocks.{args.block}.mlp_out", *layers]
        images = f"shapes:n={args.n_images},seed=0"
        store = harvest(HarvestConfig(out=str(out / "store.zarr"), model=MODEL, images=images, hooks=hooks,
                                      tokens="all", batch_size=64, progress=False))
        tokens = int(args.tokens)
        result: dict = {"bench": "multi_hook", "model": MODEL, "n_images": args.n_images, "tokens": tokens}
        if "transcoders" in args.parts:
            result["transcoders"] = transcoders(store.path, out / "runs", tokens, args.block)
        if "crosscoder" in args.parts:
            result["crosscoder"] = crosscoder(store.path, out / "runs", tokens, layers, store.d(layers[0]))
        result |= {"targets": {"transcoder_fvu": "<= 0.10", "dead_fraction": "< 0.01", "recovered_vs_zero": ">= 0.95",
                              "skip_fvu_reduction": ">= 0.20", "crosscoder_ratio_to_separate": "<= 1.5"}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
