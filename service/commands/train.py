"""`visae train CONFIG.yaml [--set key=value ...]` and `visae train --resume RUN_DIR`."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train one SAE on an activation store",
        description="Train one SAE from a YAML config (fields: training.config.TrainConfig). "
                    "Under `torchrun --nproc_per_node=N` the run is data-parallel.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file (optional with --resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set k=64 --set total_tokens=1e7 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.core import distributed
    from visae.training.config import load_config
    from visae.training.run import resume, train

    if args.resume:
        out = resume(args.resume, args.overrides, config_path=args.config)
    elif args.config is None and not args.overrides:
        raise ValueError("give a config file (visae train CONFIG.yaml) or --resume RUN_DIR")
    else:
        out = train(load_config(args.config, args.overrides))
    if distributed.is_main():
        print(out)
    return 0
