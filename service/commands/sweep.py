"""`visae sweep SWEEP.yaml [--set key=value ...]` and `visae sweep --resume SWEEP_DIR`: a grid of SAEs
trained in one pass over the data."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="train a grid of SAEs in one pass over a store",
        description="Train every SAE of a grid (architecture, k / sparsity coefficient, width, LR) on one store "
                    "and hook in a single pass over the data. Fields: training.sweep.SweepConfig (a TrainConfig "
                    "plus `grid`). Under `torchrun --nproc_per_node=N` the SAEs are sharded across ranks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", nargs="?", help="sweep YAML file (or give every field with --set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set 'grid.k=[16,32,64]' (repeatable)")
    p.add_argument("--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep from its last checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.core import distributed
    from visae.training.sweep import load_sweep_config, resume_sweep, sweep

    if args.resume:
        out = resume_sweep(args.resume, args.overrides)
    elif args.config is None and not args.overrides:
        raise ValueError("give a sweep file (visae sweep SWEEP.yaml) or --resume SWEEP_DIR")
    else:
        out = sweep(load_sweep_config(args.config, args.overrides))
    if distributed.is_main():
        print(out)
    return 0
