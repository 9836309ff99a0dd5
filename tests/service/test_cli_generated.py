"""The `visae` CLI is generated from the commands' dataclasses: every command's --help lists every field with its
default and meaning, bad values and files get one-line errors, and flags win over the --config YAML file."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import typing

import pytest
import tyro
import yaml
from omegaconf import MISSING

from visae.core.fields import field_rules
from visae.service.cli import Command, Group, _module, command_names, main, parse_command

POSITIONAL = typing.get_args(tyro.conf.Positional[int])[1]


def commands() -> dict[str, Command]:
    """Every command (and zoo action) by its words on the command line."""
    found: dict[str, Command] = {}
    for name in command_names():
        command = _module(name).COMMAND
        actions = command.actions if isinstance(command, Group) else {"": command}
        found.update({" ".join(filter(None, (name, action))): spec for action, spec in actions.items()})
    return found


COMMANDS = commands()

# A bad value for a typed field of each command, and what its one-line error must name.
BAD_VALUES = {
    "compare": (["a", "b", "--split-threshold", "abc"], ["--split-threshold", "abc"]),
    "convert": (["s.pt", "out", "--format", "onnx"], ["--format", "onnx", "saev", "prisma"]),
    "eval": (["sae", "--store", "s.zarr", "--top-k", "abc"], ["--top-k", "abc"]),
    "harvest": (["--out", "s.zarr", "--tokens", "pixels"], ["tokens", "pixels", "all, cls, registers, patches"]),
    "publish": (["sae"], ["--repo", "--config"]),
    "pull": (["release", "id", "--revision"], ["--revision"]),
    "quickstart": (["--n-images", "many"], ["--n-images", "many"]),
    "serve": (["sae", "--port", "abc"], ["--port", "abc"]),
    "sweep": (["--store", "s.zarr", "--hook", "h", "--grid.k", "8", "abc"], ["--grid.k", "abc"]),
    "train": (["--store", "s.zarr", "--hook", "h", "--k", "abc"], ["--k", "abc"]),
    "verify": (["s.zarr", "--progress", "abc"], ["abc"]),
    "zoo train-toy": (["--steps", "1.5"], ["--steps", "1.5"]),
}

# Each command's settings from a YAML file and a flag: (positional arguments, YAML, flags, expected settings).
PRECEDENCE = {
    "compare": (["a", "b"], {"split_threshold": 0.7, "out": "y.json"}, ["--out", "z.json"],
                {"split_threshold": 0.7, "out": "z.json", "a": "a"}),
    "convert": (["s.pt", "o"], {"hook": "blocks.1.mlp_out", "model": "m"}, ["--model", "n"],
                {"hook": "blocks.1.mlp_out", "model": "n"}),
    "eval": (["sae"], {"store": "s.zarr", "top_k": 4, "n_quantiles": 3}, ["--top-k", "5"],
             {"store": "s.zarr", "top_k": 5, "n_quantiles": 3, "sae_dir": "sae"}),
    "harvest": ([], {"out": "a.zarr", "batch_size": 8, "hooks": ["embed"]}, ["--out", "b.zarr"],
                {"out": "b.zarr", "batch_size": 8, "hooks": ["embed"]}),
    "publish": (["sae"], {"repo": "org/a", "private": True}, ["--repo", "org/b"],
                {"repo": "org/b", "private": True, "dirs": ["sae"]}),
    "pull": (["release", "id"], {"revision": "v1", "out": "x"}, ["--revision", "v2"], {"revision": "v2", "out": "x"}),
    "quickstart": ([], {"n_images": 64, "tokens": "4e6"}, ["--n-images", "32"], {"n_images": 32, "tokens": 4_000_000}),
    "serve": (["sae"], {"port": 9000, "host": "0.0.0.0"}, ["--port", "9001"], {"port": 9001, "host": "0.0.0.0"}),
    "sweep": ([], {"store": "s.zarr", "hook": "h", "total_tokens": "4e6", "grid": {"k": [1, 2], "lr": [1e-3]}},
              ["--grid.k", "8", "16", "32"], {"total_tokens": 4_000_000, "k": 32}),
    "train": ([], {"store": "s.zarr", "hook": "h", "k": 16, "batch_size": 128}, ["--k", "64", "--total-tokens", "2e6"],
              {"store": "s.zarr", "k": 64, "batch_size": 128, "total_tokens": 2_000_000}),
    "verify": (["s.zarr"], {"read_chunks": False, "progress": False}, ["--progress"],
               {"store": "s.zarr", "read_chunks": False, "progress": True}),
    "zoo train-toy": ([], {"steps": 5, "model": {"depth": 2, "embed_dim": 32}}, ["--model.depth", "3"],
                      {"steps": 5, "out": "toy-vit-shapes"}),
}


@pytest.fixture
def never_run(monkeypatch):
    """Every command's `run` replaced by a failure: these tests are about parsing, and a command that got past
    it (the quickstart with a --config file ignored, say) would fail the test instead of running for minutes."""
    def ran(*args, **kwargs):
        raise AssertionError("the command ran instead of refusing its arguments")

    for name in command_names():
        module = _module(name)
        if isinstance(module.COMMAND, Group):
            actions = {action: dataclasses.replace(spec, run=ran) for action, spec in module.COMMAND.actions.items()}
            monkeypatch.setattr(module, "COMMAND", dataclasses.replace(module.COMMAND, actions=actions))
        else:
            monkeypatch.setattr(module, "COMMAND", dataclasses.replace(module.COMMAND, run=ran))


def test_every_command_is_covered():
    assert COMMANDS.keys() == BAD_VALUES.keys() == PRECEDENCE.keys()


def _help(words: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")  # one option a line where it fits
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code in (0, None)
    return capsys.readouterr().out


def _entries(help_text: str) -> dict[str, str]:
    """The help's options and positional arguments: first word -> the entry's text on one line."""
    entries, current = {}, None
    for line in help_text.splitlines():
        line = line.replace("│", " ")  # boxes drawn in unicode, or plain in ASCII
        body, indent = line.strip(), len(line) - len(line.lstrip())
        head = re.match(r"(--?[a-z][\w.-]*|[A-Z][A-Z_.]*)(,| |$)", body)
        if indent <= 2:
            current = head.group(1) if head else None
            if current:
                entries[current] = body
        elif current:
            entries[current] += " " + body
    return entries


def _fields(cls: type, prefix: str = ""):
    """(option as the help names it, default, declared rules) for every field, nested ones as --grid.k."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint, default = hints[f.name], _default(f)
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            yield from _fields(inner, f"{prefix}{f.name}.")
            continue
        metadata = getattr(hint, "__metadata__", ())
        if POSITIONAL in metadata:
            yield next(m.metavar for m in metadata if getattr(m, "metavar", None)), default, []
        else:
            yield f"--{prefix}{f.name.replace('_', '-')}", default, field_rules(hint)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _shown(value) -> str:
    """A default as tyro's help writes it."""
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return shlex.quote(json.dumps(value))
    return shlex.quote(value) if isinstance(value, str) else str(value)


@pytest.mark.parametrize("words", COMMANDS)
def test_help_lists_every_field_with_its_default_and_meaning(words, capsys, monkeypatch):
    entries = _entries(_help(words.split(), capsys, monkeypatch))
    command = COMMANDS[words]
    listed = list(_fields(command.settings)) + list(_fields(command.invocation))
    assert len(listed) >= 3
    for option, default, rules in listed:
        assert option in entries, f"{option} is not in `visae {words} --help`"
        entry = " ".join(entries[option].split())
        shown = "(required)" if default == MISSING else f"(default: {' '.join(_shown(default).split())}"
        shown += "".join(f"; {rule.describe()}" for rule in rules) + ")" * (default != MISSING)
        assert entry.endswith(shown), (entry, shown)
        meaning = " ".join(word for word in entry[len(option):-len(shown)].split() if not word.startswith("-"))
        words = [word for word in re.findall(r"\b[A-Za-z][a-z]+\b", meaning) if word != "None"]
        assert len(words) >= 2, f"{option} has no help text: {entry!r}"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^\s+{name}\b", out, re.MULTILINE) for name in command_names())
    with pytest.raises(SystemExit) as exited:
        main(["zoo", "--help"])
    assert exited.value.code == 0 and re.search(r"^\s+train-toy\b", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize("words", COMMANDS)
def test_bad_value_is_a_one_line_error_naming_the_field(words, capsys, never_run):
    argv, named = BAD_VALUES[words]
    assert main([*words.split(), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"visae {words}: error: ") and err.count("\n") == 1, err
    assert all(part in err for part in named), (named, err)
    assert "Traceback" not in err


def test_missing_required_settings_say_how_to_set_them(capsys, never_run):
    assert main(["train", "--k", "8"]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and "--hook" in err and "--config FILE.yaml" in err
    assert main(["eval"]) == 2
    assert "missing DICTIONARY" in capsys.readouterr().err


def test_architecture_choice_names_the_field_and_the_choices(capsys):
    assert main(["train", "--store", "s.zarr", "--hook", "h", "--architecture", "gated"]) == 2
    err = capsys.readouterr().err
    assert "architecture 'gated'" in err and "topk" in err and "jumprelu" in err and err.count("\n") == 1


@pytest.mark.parametrize("words", COMMANDS)
def test_config_file_errors_name_the_file_and_the_field(words, tmp_path, capsys, never_run):
    missing = tmp_path / "missing.yaml"
    assert main([*words.split(), "--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_field: 1\n")
    assert main([*words.split(), f"--config={bad}"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "no_such_field" in err and err.count("\n") == 1


def test_yaml_value_of_the_wrong_type_names_the_file_and_the_field(tmp_path, capsys, never_run):
    path = tmp_path / "train.yaml"
    path.write_text("store: s.zarr\nhook: h\nk: many\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'k'" in err and "many" in err


@pytest.mark.parametrize("words", COMMANDS)
def test_flags_win_over_the_yaml_file_which_wins_over_the_defaults(words, tmp_path):
    positional, values, flags, expected = PRECEDENCE[words]
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(values))
    settings, _ = parse_command([*words.split(), *positional, "--config", str(path), *flags])
    got = {name: getattr(settings, name) for name in expected if hasattr(settings, name)}
    if words == "sweep":
        got.update(k=settings.grid.k[-1], lr=settings.grid.lr)
        assert settings.grid.k == [8, 16, 32] and settings.grid.lr == [1e-3]
    if words == "zoo train-toy":
        assert (settings.model.depth, settings.model.embed_dim, settings.model.num_heads) == (3, 32, 4)
    assert {name: got[name] for name in expected} == expected


def test_resume_takes_the_saved_settings_and_flags_win(tmp_path):
    from visae.training.config import TrainConfig, to_yaml

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "train_config.yaml").write_text(to_yaml(TrainConfig(store="s.zarr", hook="h", k=7, out_dir="x")))
    settings, options = parse_command(["train", "--resume", str(run_dir), "--wandb-mode", "disabled"])
    assert (settings.store, settings.k, settings.wandb_mode, options) == ("s.zarr", 7, "disabled",
                                                                         {"resume": str(run_dir)})


def test_only_the_command_being_run_is_imported():
    probe = ("import sys\nfrom visae.service.cli import resolve\nresolve(['compare', 'a', 'b'])\n"
             "print(sorted(m for m in sys.modules if m.startswith('visae.service.commands.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['visae.service.commands.compare']"
