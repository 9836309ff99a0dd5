"""The `visae` command. Each sub-command lives in its own module under `service.commands`
and exposes `register(subparsers)`, which adds its parser and sets `func(args) -> int | None`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from service import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visae", description="Sparse autoencoders for vision models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"visae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
