"""`visae quickstart`: the whole pipeline on the embedded default, offline, in a few minutes.

Generates a `shapes` dataset, harvests the toy model's activations (CLS, register and patch tokens) at three
hook points, trains a TopK SAE on one of them, evaluates it, and optionally serves it. Every stage resumes:
rerunning the command after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODEL = "visae:toy-vit-shapes"
HOOKS = ["blocks.-2.resid_post", "blocks.-1.resid_post", "blocks.2.mlp_hidden"]
TRAIN_HOOK = "blocks.-2.resid_post"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="harvest, train, evaluate (and serve) on the embedded toy model",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="visae-quickstart", help="folder for the store, the run and the report")
    p.add_argument("--n-images", type=int, default=2048, help="generated shapes images to harvest")
    p.add_argument("--tokens", type=float, default=4e6, help="training token budget")
    p.add_argument("--serve", action="store_true", help="finish by serving the trained dictionary")
    p.add_argument("--port", type=int, default=8765, help="port for --serve (binds 127.0.0.1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    store = _harvest(out, args.n_images)
    sae_dir = _train(out, store, int(args.tokens))
    report = _evaluate(sae_dir, store)
    _print_summary(out, store, sae_dir, report)
    if args.serve:
        from visae.service.server import serve

        serve([str(sae_dir)], port=args.port)
    return 0


def _harvest(out: Path, n_images: int) -> str:
    from visae.activation_store.harvest_config import HarvestConfig
    from visae.activation_store.harvester import harvest

    path = out / "store.zarr"
    print(f"[1/3] harvesting {MODEL} at {', '.join(HOOKS)} (all tokens: CLS, 4 registers, patches) -> {path}")
    harvest(HarvestConfig(out=str(path), model=MODEL, images=f"shapes:n={n_images},seed=0", hooks=HOOKS,
                          tokens="all", batch_size=64))
    return str(path)


def _train(out: Path, store: str, tokens: int) -> Path:
    from visae.training.config import TrainConfig
    from visae.training.run import checkpoint_path, train

    cfg = TrainConfig(store=store, hook=TRAIN_HOOK, architecture="topk", k=32, expansion_factor=16,
                      total_tokens=tokens, out_dir=str(out / "runs"), run_name="topk-k32-x16",
                      checkpoint_every_steps=200, eval_every_steps=200)
    print(f"[2/3] training a TopK SAE (k=32, 16x width) on {TRAIN_HOOK}, {tokens:,} tokens")
    return train(cfg, resume=checkpoint_path(cfg.run_dir).exists() or (cfg.run_dir / "sae" / "cfg.json").exists())


def _evaluate(sae_dir: Path, store: str) -> Path:
    from visae.eval.config import EvalConfig
    from visae.eval.evaluate import evaluate

    print(f"[3/3] evaluating {sae_dir}")
    evaluate(EvalConfig(sae_dir=str(sae_dir), store=store))
    return sae_dir / "eval" / "report.html"


def _print_summary(out: Path, store: str, sae_dir: Path, report: Path) -> None:
    summary = json.loads((sae_dir / "eval" / "summary.json").read_text())
    figures = {name: summary.get(name) for name in ("fvu", "l0", "dead_fraction", "n_tokens", "coverage_0_9")}
    print("\nvisae quickstart finished")
    print(f"  activation store : {store}")
    print(f"  dictionary       : {sae_dir}")
    print(f"  report           : {report}")
    print("  figures          : " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items() if v is not None))
    print("\nNext:")
    print(f"  visae serve {sae_dir}              # browse features in the web UI")
    print(f"  visae eval {sae_dir} --store {store}")
    print(f"  visae train CONFIG.yaml --set store={store} --set hook=blocks.2.mlp_hidden")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
