"""`visae quickstart`: the whole pipeline on the embedded default, offline, in a few minutes.

Generates a `shapes` dataset, harvests the toy model's activations (CLS, register and patch tokens) at three
hook points, trains a TopK SAE on one of them, evaluates it on held-out images, and optionally serves it. Every
stage resumes: rerunning the command after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from visae.core.atomic import check_output_folder
from visae.core.fields import bounds, check_fields
from visae.service.cli import Command

MODEL = "visae:toy-vit-shapes"
HOOKS = ["blocks.-2.resid_post", "blocks.-1.resid_post", "blocks.2.mlp_hidden"]
TRAIN_HOOK = "blocks.-2.resid_post"
HELD_OUT_SEED = 1000  # evaluation images: the toy model's held-out seed, so neither it nor the SAE saw them


@dataclass
class QuickstartOptions:
    out: str = "visae-quickstart"  # folder for the store, the run and the report
    n_images: Annotated[int, bounds(ge=1)] = 2048  # generated shapes images to harvest
    tokens: Annotated[int, bounds(ge=1)] = 4_000_000  # training token budget (4e6 works too)
    serve: bool = False  # finish by serving the trained dictionary
    port: Annotated[int, bounds(ge=1, le=65535)] = 8765  # port for --serve (binds 127.0.0.1)

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: QuickstartOptions) -> int:
    check_output_folder(options.out, "--out")
    out = Path(options.out).resolve()
    store = _harvest(out, options.n_images)
    sae_dir = _train(out, store, options.tokens)
    report = _evaluate(sae_dir, options.n_images)
    _print_summary(out, store, sae_dir, report)
    if options.serve:
        from visae.service.server import serve

        serve([str(sae_dir)], port=options.port)
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


def _evaluate(sae_dir: Path, n_images: int) -> Path:
    from visae.eval.config import EvalConfig
    from visae.eval.evaluate import evaluate

    images = f"shapes:n={n_images},seed={HELD_OUT_SEED}"
    print(f"[3/3] evaluating {sae_dir} on held-out images {images}")
    evaluate(EvalConfig(sae_dir=str(sae_dir), model=MODEL, images=images))
    return sae_dir / "eval" / "report.html"


def _print_summary(out: Path, store: str, sae_dir: Path, report: Path) -> None:
    summary = json.loads((sae_dir / "eval" / "summary.json").read_text())
    figures = {name: summary.get(name) for name in ("fvu", "l0", "dead_fraction", "n_tokens")}
    print("\nvisae quickstart finished")
    print(f"  activation store : {store}")
    print(f"  dictionary       : {sae_dir}")
    print(f"  report           : {report}")
    print("  figures          : " + ", ".join(f"{k}={_fmt(v)}" for k, v in figures.items() if v is not None))
    ceiling = summary.get("probe_ceiling")
    if ceiling:
        print(f"  ground truth     : Coverage@0.9 = {_fmt(summary.get('coverage_0_9'))} of all "
              f"{ceiling['n_values']} factor values; of the {ceiling['n_decodable']} values a linear probe decodes "
              f"(AUROC >= 0.9), {_fmt(ceiling['coverage_0_9_decodable'])} (docs/metrics.md, \"Probe ceiling\")")
    check = summary.get("ranking")
    if check:
        print(f"  ranking          : ground-truth detectors in the top {check['top']}: "
              f"{_fmt(check['rank_top_detector_share'])} by rank, "
              f"{_fmt(check['rank_label_free_top_detector_share'])} by the label-free rank; base rate "
              f"{_fmt(check['base_rate_live'])} of live latents")
    seg = summary.get("segmentation")
    if seg:
        shown = {"Probe R": seg.get("probe_r"), "mAP": seg.get("map"), "Purity@16": seg.get("purity_16"),
                 "Coverage@0.3": seg.get("coverage_0_3")}
        print(f"  segmentation     : {', '.join(f'{k}={_fmt(v)}' for k, v in shown.items())} "
              f"(saev's metrics on the {seg['factor']} patch labels, docs/metrics.md)")
    print("\nNext:")
    print(f"  visae serve {sae_dir}              # browse features in the web UI")
    print(f"  visae eval {sae_dir} --store {store}")
    print(f"  visae train --store {store} --hook blocks.2.mlp_hidden --total-tokens 4e6")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


COMMAND = Command(
    QuickstartOptions, run, help="harvest, train, evaluate (and serve) on the embedded toy model",
    description="The whole pipeline on the embedded toy model, offline, in a few minutes: generate `shapes` images, "
                "harvest the model's activations at three hook points, train a TopK SAE on one of them, evaluate it "
                "and optionally serve it. Rerunning the command after an interruption continues where it stopped.")
