"""The `visae` command: `visae COMMAND [--config FILE.yaml] [--FIELD VALUE ...]`.

Each command lives in its own module under `service.commands`, named as the command, which exposes `COMMAND`:
a `Command` (a dataclass of settings and the function that runs them) or a `Group` of actions (`visae zoo
train-toy`). Its flags and `--help` are generated from the dataclass's fields by tyro, chosen because it reads
each field's type, default and inline `#` comment, spells nested dataclasses and lists as `--grid.k 8 16 32`, and
takes an instance as the defaults, so a YAML file read by `core.config` (type-checked, `4e6` a whole number) slots
in between the dataclass defaults and the flags.

Only the module of the command being run is imported (some pull in torch, open_clip or uvicorn), so
`visae harvest ...` does not pay for `visae serve`'s imports; `visae --help` imports them all.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import importlib
import json
import pkgutil
import sys
import typing
from dataclasses import dataclass, field
from types import ModuleType
from typing import Annotated, Any, Callable, Optional

import tyro
import yaml
from omegaconf import MISSING
from tyro import _errors  # tyro's hook on parse errors (experimental; tyro is pinned to 1.0.x for it)
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

from visae.core.config import typed_config_values
from visae.service import commands

DESCRIPTION = "Sparse autoencoders for vision models."
ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError)


@dataclass
class ConfigFile:
    """The flags every command reads before the others."""

    config: Annotated[Optional[str], tyro.conf.arg(metavar="FILE.yaml")] = None
    """YAML file of settings: the options below, with underscores (nested ones as mappings); flags win over it"""

    def settings_file(self) -> str | None:
        """The YAML file whose settings sit between the defaults and the flags."""
        return self.config


@dataclass(frozen=True)
class Command:
    """A `visae` command: its flags are the fields of `settings` and of `invocation`; it runs as
    `run(settings, **invocation fields but config)`."""

    settings: type
    run: Callable[..., int | None]
    help: str  # one line, for the list of commands
    description: str  # the top of the command's --help
    invocation: type[ConfigFile] = ConfigFile


@dataclass(frozen=True)
class Group:
    """A command made of actions, e.g. `visae zoo train-toy`."""

    help: str
    actions: dict[str, Command]


def command_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def main(argv: list[str] | None = None) -> int:
    prog, command, rest = resolve(sys.argv[1:] if argv is None else list(argv))
    try:
        return int(execute(prog, command, rest) or 0)
    except ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{prog}: error: {os_error_message(err)}", file=sys.stderr)
        return 2


def os_error_message(err: OSError) -> str:
    """One line for a failed read or write, with the next step: the writes are atomic and the long commands
    resume, so after a full disk nothing complete was lost and rerunning the same command continues."""
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk{' writing' + where if where else ''}; nothing complete was "
                "overwritten: free some space (or choose another output folder), then rerun the same command, "
                "which resumes harvests and training runs from their last complete step")
    if err.errno in (errno.ENOTDIR, errno.EISDIR):
        return f"{err.strerror}:{where}; a file stands where a folder is needed (or the reverse): choose another path"
    if err.errno in (errno.EROFS, errno.EACCES):
        return f"cannot write{where} ({err.strerror}); choose a writable path"
    return f"{err.strerror or err}{':' + where if where else ''}"


def run_command(argv: list[str]) -> int | None:
    """`visae ARGV` with its errors raised rather than reported."""
    return execute(*resolve(list(argv)))


def parse_command(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """What `visae ARGV` would run with, without running it: see `parse`."""
    return parse(*resolve(list(argv)))


def resolve(argv: list[str]) -> tuple[str, Command, list[str]]:
    """The program name, command and own arguments of `visae ARGV`, importing only that command's module.
    Without a command (or an action, for a group) it prints the list, or the error, and exits."""
    names = command_names()
    if not argv or argv[0] not in names:
        _listing("visae", DESCRIPTION, "COMMAND", {name: _module(name).COMMAND.help for name in names}).parse_args(argv)
    prog, command, rest = f"visae {argv[0]}", _module(argv[0]).COMMAND, argv[1:]
    if isinstance(command, Group):
        if not rest or rest[0] not in command.actions:
            actions = {name: action.help for name, action in command.actions.items()}
            _listing(prog, command.help, "ACTION", actions).parse_args(rest)
        prog, command, rest = f"{prog} {rest[0]}", command.actions[rest[0]], rest[1:]
    return prog, command, rest


def execute(prog: str, command: Command, argv: list[str]) -> int | None:
    settings, options = parse(prog, command, argv)
    return command.run(settings, **options)


def parse(prog: str, command: Command, argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """The command's settings, from the dataclass defaults <- the --config YAML file <- the flags, and the
    invocation's other flags (e.g. `resume`) as keyword arguments for `run`."""
    early = command.invocation(**_early_flags(argv, command.invocation))
    defaults = _unbuilt(command.settings, typed_config_values(command.settings, early.settings_file()))
    unprefixed = tyro.conf.arg(name="")  # flags named as the fields: --k, not --settings.k
    flags = dataclasses.make_dataclass("Flags", [
        ("invocation", Annotated[command.invocation, unprefixed], field(default_factory=command.invocation)),
        ("settings", Annotated[command.settings, unprefixed], field(default_factory=lambda: defaults)),
    ])
    with _errors.on_parse_error(_refuse), REGISTRY:
        parsed = tyro.cli(flags, args=argv, prog=prog, description=command.description)
    return parsed.settings, {name: value for name, value in vars(parsed.invocation).items() if name != "config"}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{commands.__name__}.{name}")


def _listing(prog: str, description: str, metavar: str, entries: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"`{prog} {metavar} --help` lists the options of each.")
    choices = parser.add_subparsers(title=f"{metavar.lower()}s", dest=metavar.lower(), required=True, metavar=metavar)
    for name, help_text in entries.items():
        choices.add_parser(name, help=help_text, add_help=False)
    return parser


def _early_flags(argv: list[str], invocation: type) -> dict[str, str]:
    """The values of `invocation`'s flags (`--config FILE`, `--config=FILE`) in ARGV, before the full parse."""
    names = {f"--{f.name.replace('_', '-')}": f.name for f in dataclasses.fields(invocation)}
    found = {}
    for i, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in names and (equals or i + 1 < len(argv)):
            found[names[flag]] = value if equals else argv[i + 1]
    return found


def _unbuilt(schema: type, values: dict):
    """A `schema` instance holding `values` (required ones unset: `tyro.MISSING`) for tyro to show and use as
    defaults. It is made without `__init__`, as the settings may be incomplete until the flags are in; tyro then
    builds the final instance, which runs the dataclass's own checks."""
    instance = object.__new__(schema)
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = values[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            value = _unbuilt(hints[f.name], value)
        setattr(instance, f.name, tyro.MISSING if value == MISSING else value)
    return instance


def _refuse(event: _errors.ParseErrorEvent) -> None:
    """tyro's parse errors as one-line ValueErrors, which `main` reports as `visae COMMAND: error: ...`. Events
    that no visae command can produce (subcommands, exclusive groups) keep tyro's own report."""
    if isinstance(event, _errors.MissingArgs):
        raise ValueError(_missing([missing.arg for missing in event.missing_arguments], event.prog))
    if isinstance(event, _errors.InvalidChoice):
        raise ValueError(f"{event.argument.display_name()}: invalid choice {event.value!r}; choose one of "
                         f"{', '.join(event.choices)}")
    if isinstance(event, _errors.UnrecognizedArgs):
        raise ValueError(f"unrecognized arguments: {' '.join(event.tokens)} (see `{event.prog} --help`)")
    if isinstance(event, _errors.BadValue):
        raise ValueError(f"{event.argument.display_name()} expects a value")
    if isinstance(event, _errors.InstantiationFailure):
        named = f"{event.argument.display_name()}: " if event.argument is not None else ""
        raise ValueError(named + event.message)


def _missing(arguments: list, prog: str) -> str:
    positional = [argument.lowered.metavar for argument in arguments if argument.is_positional()]
    if positional:
        return f"missing {' '.join(positional)} (see `{prog} --help`)"
    flags = [argument.display_name() for argument in arguments]
    return (f"missing required setting {', '.join(flags)}: give a config file (--config FILE.yaml) that sets "
            f"{'it' if len(flags) == 1 else 'them'}, or {' '.join(f'{flag} VALUE' for flag in flags)}")


REGISTRY = ConstructorRegistry()


@REGISTRY.primitive_rule
def _whole_number_rule(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """Integer flags take whole numbers written as floats too, as the YAML files do: `--total-tokens 4e6`."""
    if info.type is not int:
        return None
    return PrimitiveConstructorSpec(nargs=1, metavar="INT", instance_from_str=lambda args: _whole_number(args[0]),
                                    is_instance=lambda value: isinstance(value, int) and not isinstance(value, bool),
                                    str_from_instance=lambda value: [str(value)])


@REGISTRY.primitive_rule
def _mapping_rule(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """Dict fields take one YAML mapping: `--sae-params '{k_aux: 512}'`."""
    if info.type_origin is not dict and info.type is not dict:
        return None
    return PrimitiveConstructorSpec(nargs=1, metavar="YAML", instance_from_str=lambda args: _mapping(args[0]),
                                    is_instance=lambda value: isinstance(value, dict),
                                    str_from_instance=lambda value: [json.dumps(value)])


def _whole_number(text: str) -> int:
    with contextlib.suppress(ValueError):
        return int(text)
    with contextlib.suppress(ValueError):
        if float(text).is_integer():
            return int(float(text))
    raise ValueError(f"expected a whole number such as 64 or 4e6, got {text!r}")


def _mapping(text: str) -> dict:
    with contextlib.suppress(yaml.YAMLError):
        value = yaml.safe_load(text)
        if isinstance(value, dict):
            return value
    raise ValueError(f"expected a YAML mapping such as '{{k_aux: 512}}', got {text!r}")


if __name__ == "__main__":
    sys.exit(main())
