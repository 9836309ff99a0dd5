"""The `visae` command. Each sub-command lives in its own module under `service.commands`, named as the
command, and exposes `register(subparsers)`, which adds its parser and sets `func(args) -> int | None`.

Only the module of the command being run is imported (some pull in torch, open_clip or uvicorn), so
`visae harvest ...` does not pay for `visae serve`'s imports; `visae --help` imports them all."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from visae.service import commands


def command_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with just `only` when that names one."""
    parser = argparse.ArgumentParser(prog="visae", description="Sparse autoencoders for vision models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = command_names()
    for name in [only] if only in names else names:
        importlib.import_module(f"{commands.__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(only=command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"visae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
