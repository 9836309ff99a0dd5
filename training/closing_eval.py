"""The closing evaluation of a run or sweep: inference statistics fitted to the final weights, then FVU, L0
and dead fraction (docs/metrics.md) on tokens drawn with another seed, recorded in the dictionary's metadata."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.core import distributed
from visae.core.reconstruction import HookStats
from visae.training.config import TrainConfig
from visae.training.data import BatchStream, loader_device
from visae.training.hook_set import HookSet

if TYPE_CHECKING:
    from jaxtyping import Float

CALIBRATION_BATCHES = 8  # batches that fit inference statistics (BatchTopK's threshold) after training
SUMMARY_FIGURES = ("fvu", "mse", "l0", "dead_fraction", "dense_fraction_10")  # what a run records of its evaluation


def calibrate(trainers, batches: Iterator[Float[Tensor, "batch d_in"]]) -> None:
    """Fit every trainer's inference-only statistics on the same `CALIBRATION_BATCHES` batches."""
    drawn = [next(batches) for _ in range(CALIBRATION_BATCHES)]
    for trainer in trainers:
        trainer.calibrate(drawn)


def training_metadata(cfg: TrainConfig, total_steps: int, summary: dict) -> dict:
    return {"training_tokens": total_steps * cfg.batch_size, "training_steps": total_steps,
            "training_config": asdict(cfg), "eval_summary": summary,
            "fvu": summary["fvu"], "l0": summary["l0"], "dead_fraction": summary["dead_fraction"]}


@torch.no_grad()
def evaluate_summary(sae, cfg: TrainConfig, hooks: HookSet, device: torch.device,
                     seed: int) -> tuple[dict, Float[Tensor, " d_sae"]]:
    """FVU, L0 and dead fraction (docs/metrics.md) on `cfg.eval_tokens` tokens drawn with another seed.

    The tokens come from the same store (not a held-out split); with a budget under one epoch many are
    unseen. Under torchrun every rank streams its share and the sums are all-reduced. The FVU is that of the
    reconstructed hooks: a transcoder's output hook; a crosscoder's hooks together, and each one's under
    `per_hook` (see `run_summary`).
    """
    return evaluate_many([sae], cfg, hooks, device, seed)[0]


@torch.no_grad()
def evaluate_many(saes: list, cfg: TrainConfig, hooks: HookSet, device: torch.device, seed: int,
                  gather: bool = False) -> list[tuple[dict, Float[Tensor, " d_sae"]]]:
    """`evaluate_summary` for several SAEs on one pass over the evaluation tokens.

    Under torchrun each rank reads its share; with `gather` the shares are all-gathered so each rank
    evaluates its own SAEs on every token (sharded sweeps), otherwise the sums are all-reduced.
    """
    world = distributed.world_size()
    batch = min(cfg.batch_size, cfg.eval_tokens)
    shares = [distributed.share(batch, world, r) for r in range(world)]
    stream = BatchStream(hooks.loader(cfg, shares[distributed.rank()], seed, loader_device(device)), device)
    all_stats = [HookStats(sae.hook_slices(), sae.cfg.d_sae, device) for sae in saes]
    for sae in saes:
        sae.eval()
    for _ in range(max(1, math.ceil(cfg.eval_tokens / batch))):
        x = next(stream)
        if gather:
            x = distributed.all_gather_rows(x, shares)
        for sae, stats in zip(saes, all_stats):
            x_in, target = sae.split_batch(x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
                x_hat, z = sae.forward_with_latents(x_in)
            stats.update(target, x_hat, z)
    stream.close()
    out = []
    for stats in all_stats:
        if not gather:
            stats.all_reduce()
        out.append((run_summary(stats, hooks.hooks), stats.total.freq()))
    return out


def run_summary(stats: HookStats, hooks: tuple[str, ...] = ()) -> dict:
    """The figures a run records (metadata, sweep results, logs) of its closing evaluation; a crosscoder's also
    each hook's FVU and MSE under `per_hook` (its hooks in order)."""
    result = stats.total.result()
    summary = {**{name: result[name] for name in SUMMARY_FIGURES}, "n_eval_tokens": stats.total.n}
    if stats.per_hook:
        summary["per_hook"] = {hook: {name: one.result()[name] for name in ("fvu", "mse")}
                               for hook, one in zip(hooks, stats.per_hook)}
    return summary
