"""Training-speed benchmark: prints one JSON object of figures, all measured as ratios within this run.

- TopK tokens/s of the real training step (`training.SAETrainer`: forward, backward, Adam, clipping,
  dead-latent tracking, metrics) against the FLOP floor 2dn + 8kd FLOP/token at the GEMM rate
  measured here (target >= 0.5x). The GEMM rate is that of `x @ W` at the encoder's shapes, which
  allocates its output like any op (the issue's floor); `*_inplace_gemm` figures use a GEMM into a
  reused buffer instead, which on CPU skips the page faults of a fresh 100 MB output and is faster.
- BatchTopK and Matryoshka-BatchTopK tokens/s of the same step against the same floor (k is their average
  L0; target >= 0.4x). Their steps and TopK's alternate one by one, and each figure is the median step time.
- A skip transcoder (d -> d, n latents) and a crosscoder over `--hooks` hooks of width d (n latents) against a
  TopK SAE of the same shape (the transcoder: d -> n; the crosscoder: hooks * d -> n), stepped in the same
  rotation (target: each at most 1.3x the SAE's step time). The crosscoder's tokens/s per hook is its tokens/s
  times the number of hooks.
- Sweeps, two ways (target <= 0.75x the time):
  - `sweep_steps_*`: 8 TopK SAEs stepped on one batch stream (`training.sweep.step_members`) against 8
    separate runs of the same steps, data in memory (the stepping alone);
  - `sweep_end_to_end_*`: one `training.sweep.sweep` of 8 SAEs (grid over LR) against 8
    `training.run.train` runs of the same configs, on a real Zarr store: loading, initialisation,
    stepping, the closing evaluation and saving (process start-up not counted).

Random data, fp32 by default (bf16 autocast with --dtype bfloat16 on a GPU). Every timing is the median
of `--repeats` rounds (the training steps: of every step of them), and the rounds interleave the measurements
so that a machine shared with other jobs slows them alike.

    python bench/train.py [--d 384 --n 6144 --k 32 --batch 4096 --steps 3 --repeats 3 --device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch

from visae.sae import SAEConfig, create_sae
from visae.training.config import TrainConfig
from visae.training.run import resolve_device, train
from visae.training.schedule import warmup_decay
from visae.training.sweep import SweepConfig, SweepGrid, step_members, sweep
from visae.training.synthetic import synthetic_store
from visae.training.trainer import SAETrainer

HOOK = "blocks.0.resid_post"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def make_trainer(args, device: torch.device, seed: int, autocast: torch.dtype | None,
                 architecture: str = "topk", width: int | None = None, **shape) -> SAETrainer:
    """The trainer of an SAE (or transcoder, crosscoder) on batches `width` values wide (default d)."""
    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(architecture=architecture, d_in=shape.pop("d_in", args.d), d_sae=args.n, k=args.k,
                               **shape)).to(device)
    sae.init_from_data(torch.randn(args.batch, width or args.d, device=device))
    return SAETrainer(sae, lr=2e-4, betas=(0.9, 0.999), grad_clip=1.0,
                      schedule=warmup_decay(10**6, 1000, 0.05, 0.2), sparsity_warmup_fraction=0.0,
                      dead_after=10**7, autocast_dtype=autocast)


def batches(args, device: torch.device, steps: int, width: int | None = None):
    """The data of one run: a fresh random batch per step (the stand-in for a loader), `width` (default d) wide."""
    for _ in range(steps):
        yield torch.randn(args.batch, width or args.d, device=device)


def hook_trainers(args, device: torch.device, autocast: torch.dtype | None) -> dict[str, tuple[SAETrainer, int]]:
    """(trainer, batch width) of a skip transcoder, a crosscoder and the SAE with the crosscoder's shape."""
    wide = args.hooks * args.d
    return {
        "skip_transcoder": (make_trainer(args, device, 0, autocast, "topk_skip_transcoder", 2 * args.d,
                                         d_out=args.d, apply_b_dec_to_input=False), 2 * args.d),
        "crosscoder": (make_trainer(args, device, 0, autocast, "crosscoder", wide, d_in=wide,
                                    hook_dims=[args.d] * args.hooks), wide),
        "sae_crosscoder_shape": (make_trainer(args, device, 0, autocast, "topk", wide, d_in=wide), wide),
    }


def end_to_end_configs(args, store: str, out_dir: str) -> tuple[SweepConfig, list[TrainConfig]]:
    """A sweep of `members` TopK SAEs differing in LR, and the same SAEs as separate runs."""
    lrs = [round(1e-4 * (i + 1), 6) for i in range(args.members)]
    shared: dict[str, Any] = dict(store=store, hook=HOOK, architecture="topk", k=args.k, d_sae=args.n,
                                  total_tokens=args.batch * args.end_to_end_steps, batch_size=args.batch,
                                  eval_tokens=args.batch, log_every_steps=10**6, eval_every_steps=10**6,
                                  checkpoint_every_steps=10**6, wandb_mode="disabled", device=args.device,
                                  dtype=args.dtype, out_dir=out_dir)
    grid = SweepGrid(architecture=["topk"], k=[args.k], d_sae=[args.n], lr=list(lrs))
    return SweepConfig(**shared, grid=grid), [TrainConfig(**shared, lr=lr, run_name=f"lr{lr:g}") for lr in lrs]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--n", type=int, default=6144)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--hooks", type=int, default=3, help="hooks of the crosscoder, each d wide")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; figures are medians")
    p.add_argument("--members", type=int, default=8, help="SAEs in the sweep (0: skip the sweep figures)")
    p.add_argument("--member-threads", type=int, default=1, help="SAEs stepped at once in the sweep")
    p.add_argument("--end-to-end-steps", type=int, default=4, help="steps of each end-to-end run (0: skip)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args()
    device = resolve_device(args.device)
    autocast = torch.bfloat16 if args.dtype == "bfloat16" else None
    gemm_dtype = torch.bfloat16 if autocast else torch.float32

    x = torch.randn(args.batch, args.d, device=device, dtype=gemm_dtype)
    w = torch.randn(args.d, args.n, device=device, dtype=gemm_dtype)
    single = make_trainer(args, device, 0, autocast)
    family = {arch: make_trainer(args, device, 0, autocast, arch) for arch in ("batchtopk", "matryoshka_batchtopk")}
    multi_hook = hook_trainers(args, device, autocast)
    members = [make_trainer(args, device, i, autocast) for i in range(args.members)]
    pool = ThreadPoolExecutor(args.member_threads) if args.member_threads > 1 else None
    warm = torch.randn(args.batch, args.d, device=device)
    for trainer in [single, *family.values(), *members]:
        trainer.step(warm, 0)
    step_members(members, warm, 0, pool)
    for trainer, width in multi_hook.values():
        trainer.step(next(batches(args, device, 1, width)), 0)

    # TopK's figure is "step"; (trainer, batch width)
    stepped = {"step": (single, args.d), **{arch: (t, args.d) for arch, t in family.items()}, **multi_hook}

    def run_step(trainer: SAETrainer, width: int, i: int):
        """One training step on a fresh batch (the stand-in for a loader)."""
        trainer.step(next(batches(args, device, 1, width)), i)

    def run_sweep():
        for i, xb in enumerate(batches(args, device, args.steps)):
            step_members(members, xb, i, pool)

    def run_separate():
        for trainer in members:
            for i, xb in enumerate(batches(args, device, args.steps)):
                trainer.step(xb, i)

    out = torch.empty(args.batch, args.n, device=device, dtype=gemm_dtype)
    work = Path(tempfile.mkdtemp(prefix="visae-bench-train-"))
    if args.end_to_end_steps:
        n_images = -(-args.batch * (args.end_to_end_steps + 2) // 65)
        synthetic_store(str(work / "store.zarr"), d=args.d, n_images=n_images, grid=(8, 8), chunk_images=64)

    def run_end_to_end(kind: str, round_index: int):
        sweep_cfg, run_cfgs = end_to_end_configs(args, str(work / "store.zarr"), str(work / f"{kind}{round_index}"))
        if kind == "sweep":
            sweep(sweep_cfg)
        else:
            for cfg in run_cfgs:
                train(cfg)

    figures = {name: [] for name in ("gemm", "gemm_inplace", *stepped, "sweep", "separate", "e2e_sweep",
                                     "e2e_separate")}
    for r in range(args.repeats):
        figures["gemm"].append(timed(lambda: [x @ w for _ in range(args.steps)], device) / args.steps)
        figures["gemm_inplace"].append(timed(lambda: [torch.mm(x, w, out=out) for _ in range(args.steps)], device)
                                       / args.steps)
        # TopK, BatchTopK and Matryoshka steps alternate one by one (the order rotating), so that a busy spell of
        # the machine slows them alike; each figure is the median over every step of every round.
        names = list(stepped)
        for i in range(args.steps):
            for name in names[i % len(names):] + names[:i % len(names)]:
                figures[name].append(timed(partial(run_step, *stepped[name], i), device))
        if args.members:
            figures["sweep"].append(timed(run_sweep, device))
            figures["separate"].append(timed(run_separate, device))
        if args.end_to_end_steps:
            figures["e2e_sweep"].append(timed(lambda: run_end_to_end("sweep", r), device))
            figures["e2e_separate"].append(timed(lambda: run_end_to_end("separate", r), device))
    med = {name: statistics.median(values) if values else float("nan") for name, values in figures.items()}
    flop_per_token = 2 * args.d * args.n + 8 * args.k * args.d
    gemm_flops = 2 * args.batch * args.d * args.n / med["gemm"]
    gemm_inplace_flops = 2 * args.batch * args.d * args.n / med["gemm_inplace"]
    tokens_s = args.batch / med["step"]
    floor = gemm_flops / flop_per_token
    family_tokens_s = {arch: args.batch / med[arch] for arch in family}
    print(json.dumps({
        "device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "gemm_gflops": round(gemm_flops / 1e9, 2),
        "gemm_inplace_gflops": round(gemm_inplace_flops / 1e9, 2),
        "floor_tokens_per_s": round(gemm_flops / flop_per_token),
        "topk_tokens_per_s": round(tokens_s),
        "topk_vs_floor": round(tokens_s / (gemm_flops / flop_per_token), 3),
        "topk_vs_floor_inplace_gemm": round(tokens_s / (gemm_inplace_flops / flop_per_token), 3),
        "topk_vs_floor_target": ">= 0.5",
        "batchtopk_tokens_per_s": round(family_tokens_s["batchtopk"]),
        "batchtopk_vs_floor": round(family_tokens_s["batchtopk"] / floor, 3),
        "matryoshka_tokens_per_s": round(family_tokens_s["matryoshka_batchtopk"]),
        "matryoshka_vs_floor": round(family_tokens_s["matryoshka_batchtopk"] / floor, 3),
        "batchtopk_matryoshka_vs_floor_target": ">= 0.4",
        "skip_transcoder_tokens_per_s": round(args.batch / med["skip_transcoder"]),
        "skip_transcoder_time_vs_sae": round(med["skip_transcoder"] / med["step"], 3),
        "crosscoder_hooks": args.hooks,
        "crosscoder_tokens_per_s": round(args.batch / med["crosscoder"]),
        "crosscoder_tokens_per_s_per_hook": round(args.hooks * args.batch / med["crosscoder"]),
        "sae_of_crosscoder_shape_tokens_per_s": round(args.batch / med["sae_crosscoder_shape"]),
        "crosscoder_time_vs_sae": round(med["crosscoder"] / med["sae_crosscoder_shape"], 3),
        "transcoder_crosscoder_vs_sae_target": "<= 1.3",
        "sweep_members": args.members, "sweep_member_threads": args.member_threads,
        "sweep_steps_one_pass_s": round(med["sweep"], 2),
        "sweep_steps_separate_s": round(med["separate"], 2),
        "sweep_steps_vs_separate": round(med["sweep"] / med["separate"], 3),
        "sweep_end_to_end_steps": args.end_to_end_steps,
        "sweep_end_to_end_one_pass_s": round(med["e2e_sweep"], 2),
        "sweep_end_to_end_separate_s": round(med["e2e_separate"], 2),
        "sweep_end_to_end_vs_separate": round(med["e2e_sweep"] / med["e2e_separate"], 3),
        "sweep_vs_separate_target": "<= 0.75",
    }))


if __name__ == "__main__":
    main()
