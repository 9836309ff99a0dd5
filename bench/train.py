"""Training-speed benchmark: prints one JSON object of figures, all measured as ratios within this run.

- TopK tokens/s of the real training step (`training.SAETrainer`: forward, backward, Adam, clipping,
  dead-latent tracking, metrics) against the FLOP floor 2dn + 8kd FLOP/token at the GEMM rate
  measured here (target >= 0.5x);
- a sweep of 8 TopK SAEs in one pass (`training.sweep.step_members`) against 8 separate runs on the
  same number of steps (target <= 0.75x the time).

Random data in memory, fp32 by default (bf16 autocast with --dtype bfloat16 on a GPU). Every timing is
the median of `--repeats` rounds, and the rounds interleave the measurements so that a machine
shared with other jobs slows them alike.

    python bench/train.py [--d 384 --n 6144 --k 32 --batch 4096 --steps 3 --repeats 3 --device auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as `python bench/train.py`: put the repository first on the path, not bench/ (bench/sae.py
# would shadow the `sae` package).
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from sae import SAEConfig, create_sae  # noqa: E402
from training.sae_trainer import SAETrainer  # noqa: E402
from training.schedule import warmup_decay  # noqa: E402
from training.sweep import step_members  # noqa: E402
from training.trainer import resolve_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def make_trainer(args, device: torch.device, seed: int, autocast: torch.dtype | None) -> SAETrainer:
    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(architecture="topk", d_in=args.d, d_sae=args.n, k=args.k)).to(device)
    sae.init_from_data(torch.randn(args.batch, args.d, device=device))
    return SAETrainer(sae, lr=2e-4, betas=(0.9, 0.999), grad_clip=1.0,
                      schedule=warmup_decay(10**6, 1000, 0.05, 0.2), sparsity_warmup_fraction=0.0,
                      dead_after=10**7, autocast_dtype=autocast)


def batches(args, device: torch.device, steps: int):
    """The data of one run: a fresh random batch per step (the stand-in for a loader)."""
    for _ in range(steps):
        yield torch.randn(args.batch, args.d, device=device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--n", type=int, default=6144)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; figures are medians")
    p.add_argument("--members", type=int, default=8, help="SAEs in the sweep")
    p.add_argument("--member-threads", type=int, default=1, help="SAEs stepped at once in the sweep")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args()
    device = resolve_device(args.device)
    autocast = torch.bfloat16 if args.dtype == "bfloat16" else None
    gemm_dtype = torch.bfloat16 if autocast else torch.float32

    x = torch.randn(args.batch, args.d, device=device, dtype=gemm_dtype)
    w = torch.randn(args.d, args.n, device=device, dtype=gemm_dtype)
    single = make_trainer(args, device, 0, autocast)
    members = [make_trainer(args, device, i, autocast) for i in range(args.members)]
    pool = ThreadPoolExecutor(args.member_threads) if args.member_threads > 1 else None
    warm = torch.randn(args.batch, args.d, device=device)
    for trainer in [single, *members]:
        trainer.step(warm, 0)
    step_members(members, warm, 0, pool)

    def run_single():
        for i, xb in enumerate(batches(args, device, args.steps)):
            single.step(xb, i)

    def run_sweep():
        for i, xb in enumerate(batches(args, device, args.steps)):
            step_members(members, xb, i, pool)

    def run_separate():
        for trainer in members:
            for i, xb in enumerate(batches(args, device, args.steps)):
                trainer.step(xb, i)

    gemm, step, sweep, separate = [], [], [], []
    for _ in range(args.repeats):
        gemm.append(timed(lambda: [x @ w for _ in range(args.steps)], device) / args.steps)
        step.append(timed(run_single, device) / args.steps)
        sweep.append(timed(run_sweep, device))
        separate.append(timed(run_separate, device))
    gemm_s, step_s = statistics.median(gemm), statistics.median(step)
    gemm_flops = 2 * args.batch * args.d * args.n / gemm_s
    floor_tokens_s = gemm_flops / (2 * args.d * args.n + 8 * args.k * args.d)
    tokens_s = args.batch / step_s
    print(json.dumps({
        "device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "gemm_gflops": round(gemm_flops / 1e9, 2),
        "floor_tokens_per_s": round(floor_tokens_s),
        "topk_tokens_per_s": round(tokens_s),
        "topk_vs_floor": round(tokens_s / floor_tokens_s, 3),
        "topk_vs_floor_target": ">= 0.5",
        "sweep_members": args.members, "sweep_member_threads": args.member_threads,
        "sweep_one_pass_s": round(statistics.median(sweep), 2),
        "separate_runs_s": round(statistics.median(separate), 2),
        "sweep_vs_separate": round(statistics.median(sweep) / statistics.median(separate), 3),
        "sweep_vs_separate_target": "<= 0.75",
    }))


if __name__ == "__main__":
    main()
