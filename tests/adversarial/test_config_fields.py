"""Every field of every command is checked against the rule declared beside it (core.fields), in the flags, in YAML
files and in configs built by hand; impossible widths, batches and sweep grids are refused with a memory estimate
before anything is allocated or written; a junk YAML file, an output path that is a file and a full disk each give
one line naming the fix."""

from __future__ import annotations

import builtins
import dataclasses
import typing
from pathlib import Path

import pytest
from hostile import HOOK, interrupted_run

from visae.core.fields import Bounds, FolderName, field_rules
from visae.service.cli import Command, Group, _module, command_names, main, parse_command
from visae.training import checkpoint
from visae.training.sweep import SweepConfig


def commands() -> dict[str, Command]:
    found = {}
    for name in command_names():
        command = _module(name).COMMAND
        actions = command.actions.items() if isinstance(command, Group) else [("", command)]
        found.update({f"{name} {action}".strip(): c for action, c in actions})
    return found


def schemas(schema: type) -> list[type]:
    """`schema` and the dataclasses nested in it."""
    hints = typing.get_type_hints(schema, include_extras=True)
    nested = [typing.get_args(h)[0] if typing.get_origin(h) is typing.Annotated else h for h in hints.values()]
    return [schema, *(s for n in nested if isinstance(n, type) and dataclasses.is_dataclass(n) for s in schemas(n))]


def required_values(schema: type) -> dict:
    """Values for the fields without a default, enough to build `schema`."""
    hints = typing.get_type_hints(schema)
    values = {}
    for f in dataclasses.fields(schema):
        if f.default == "???" or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = ["x"] if typing.get_origin(hints[f.name]) is list else "x"
    if "store" in values or any(f.name == "store" for f in dataclasses.fields(schema)):
        values["store"] = "x"  # eval: a store, not a model to harvest from
    return values


def outside(rule: Bounds) -> float:
    """A number that breaks `rule`."""
    if rule.ge is not None:
        return rule.ge - 1
    if rule.gt is not None:
        return rule.gt - 1 if rule.gt == int(rule.gt) else rule.gt - 0.5
    upper = rule.le if rule.le is not None else rule.lt
    assert upper is not None
    return upper + 1


RULED = [(words, schema, f.name) for words, command in commands().items()
         for schema in schemas(command.settings)
         for f in dataclasses.fields(schema)
         if any(isinstance(r, Bounds) and (r.ge, r.gt, r.le, r.lt) != (None,) * 4
                for r in field_rules(typing.get_type_hints(schema, include_extras=True)[f.name]))]


def test_the_commands_declare_rules_on_their_numeric_fields():
    assert len(RULED) >= 60
    assert {"train", "sweep", "eval", "harvest", "serve", "quickstart", "compare", "zoo train-toy"} <= {
        words for words, _, _ in RULED}


@pytest.mark.parametrize(("words", "schema", "name"), RULED, ids=[f"{w}:{s.__name__}.{n}" for w, s, n in RULED])
def test_a_value_outside_a_declared_rule_is_refused_naming_the_field(words, schema, name):
    hints = typing.get_type_hints(schema, include_extras=True)
    rule = next(r for r in field_rules(hints[name]) if isinstance(r, Bounds))
    value = outside(rule)
    plain = typing.get_type_hints(schema)[name]
    if typing.get_origin(plain) is list or (typing.get_origin(plain) is tuple):
        value = [value]
    elif int in typing.get_args(plain) or plain is int:
        value = int(value)
    with pytest.raises(ValueError, match=rf"^{name} must be .*got "):
        schema(**{**required_values(schema), name: value})


@pytest.mark.parametrize("words", sorted(commands()))
def test_every_command_checks_types_when_built_by_hand(words):
    """A config built from JSON or in Python, where no parser checked it: the first field of each type is tried."""
    for schema in schemas(commands()[words].settings):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            wrong = {int: 2.5, float: "fast", str: 3, bool: "yes"}.get(hints[f.name])
            if wrong is not None:
                with pytest.raises(ValueError, match=rf"^{f.name} must be "):
                    schema(**{**required_values(schema), f.name: wrong})


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--k", "2.7"], "--k: expected a whole number such as 64 or 4e6, got '2.7'"),
    (["train", "--d-sae", "-5"], "d_sae must be >= 1, got -5"),
    (["train", "--grad-clip", "-1"], "grad_clip must be >= 0, got -1"),
    (["train", "--lr-warmup-steps", "-3"], "lr_warmup_steps must be >= 0, got -3"),
    (["train", "--dead-after-tokens", "-3"], "dead_after_tokens must be >= 1, got -3"),
    (["train", "--lr", "inf"], "lr must be > 0, got inf"),
    (["train", "--adam-betas", "0.9", "1.5"], "adam_betas must be >= 0, < 1, got 1.5"),
    (["train", "--sae-params", "{k_aux: -4}"], "k_aux must be >= 0, got -4"),
    (["train", "--sae-params", "{k_axu: 4}"], "sae_params has no field k_axu; its fields are architecture, d_in"),
    (["train", "--run-name", "../../x"], "run_name must be one plain folder name (no '/', '..' or empty), got '../.."),
    (["sweep", "--grid.k"], "k needs at least one value"),
    (["sweep", "--grid.expansion-factor", "8", "0"], "expansion_factor must be > 0, got 0"),
    (["eval", "dict", "--store", "s", "--downstream-images", "-4"], "downstream_images must be >= 0, got -4"),
    (["serve", "dict", "--port", "70000"], "port must be >= 1, <= 65535, got 70000"),
])
def test_the_probed_flags_are_refused_in_one_line(args, message, capsys, tmp_path):
    if args[0] in ("train", "sweep"):
        args = [*args, "--store", "s", "--hook", HOOK, "--out-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"visae {args[0]}: error: {message}\n" or (message in err and err.count("\n") == 1), err
    assert list(tmp_path.iterdir()) == []


def test_help_shows_the_rule_the_check_uses(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1.0; >= 0)" in text  # grad_clip
    assert "(default: None; one folder name, no '/')" in text  # run_name


@pytest.mark.parametrize(("content", "message"), [
    (b"- a\n- b\n", "holds a list, not a mapping of settings"),
    (b"5\n", "holds a single value, not a mapping of settings"),
    (b"\x83\x01\xff" * 50, "is not a text file"),
    (b"store: [s\nhook: h\n", "is not valid YAML"),
    (b"store: s\nhook: h\nk: {a: 1}\n", "bad field 'k'"),
    (b"store: s\nhook: h\nk: 2.5\n", "bad field 'k'"),
    (b"store: s\nhook: h\nbogus: 3\n", "bad field 'bogus'"),
])
def test_junk_yaml_is_one_line_naming_the_file(content, message, tmp_path, capsys):
    config = tmp_path / "settings.yaml"
    config.write_bytes(content)
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visae train: error: ") and err.count("\n") == 1 and message in err
    assert str(config) in err


def test_a_sweep_grid_that_cannot_fit_is_refused_with_its_estimate_before_anything_is_written(store_path, tmp_path,
                                                                                             capsys):
    grid = ["--grid.k", *map(str, range(1, 5001)), "--grid.d-sae", "1000000"]
    args = ["sweep", "--store", store_path, "--hook", HOOK, "--out-dir", str(tmp_path / "out"), "--device", "cpu",
            "--total-tokens", "1e6", "--wandb-mode", "disabled", *grid]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "5000 SAEs of this sweep on this rank needs about" in err and "GiB" in err
    assert "split the grid" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--expansion-factor", "1e9"], "needs about"),
    (["--batch-size", "1e8", "--total-tokens", "1e9"], "at batch_size 100,000,000 needs about"),
    (["--expansion-factor", "0.001"], "expansion_factor 0.001 x d_in 16 gives no latents"),
    (["--device", "potato"], "unknown device 'potato'"),
])
def test_impossible_runs_are_refused_before_anything_is_written(flags, message, store_path, tmp_path, capsys):
    args = ["train", "--store", store_path, "--hook", HOOK, "--out-dir", str(tmp_path / "out"), "--total-tokens",
            "1e6", "--wandb-mode", "disabled", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "harvest", "quickstart"])
def test_an_output_path_that_is_a_file_is_refused_and_the_file_kept(command, store_path, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    args = {"train": ["train", "--store", store_path, "--hook", HOOK, "--out-dir", str(blocker)],
            "harvest": ["harvest", "--out", str(blocker / "store.zarr"), "--images", "shapes:n=4,seed=0"],
            "quickstart": ["quickstart", "--out", str(blocker)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a folder; choose another" in err and str(blocker) in err and err.count("\n") == 1
    assert blocker.read_text() == "keep me"


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_rerun_resumes(store_path, tmp_path, monkeypatch,
                                                                           capsys):
    """The checkpoint's writes go to /dev/full, where the kernel answers every write with ENOSPC."""
    run_dir = interrupted_run(store_path, tmp_path, monkeypatch)
    before = (run_dir / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(checkpoint, "open", lambda _path, mode: builtins.open("/dev/full", mode), raising=False)
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("visae train: error: no space left on the disk") and "rerun the same command" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary left behind
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert (run_dir / "sae" / "cfg.json").is_file()


def test_folder_name_rule_accepts_plain_names_only():
    rule = FolderName()
    assert rule.problem("topk-k32") is None and rule.problem(None) is None
    assert all(rule.problem(bad) for bad in ("", " ", ".", "..", "a/b", "..\\x", "/abs"))


def test_sweep_members_keep_their_grid_rules():
    with pytest.raises(ValueError, match="^lr must be > 0, got -1$"):
        parse_command(["sweep", "--store", "s", "--hook", "h", "--grid.lr", "0.001", "-1"])
    cfg, _ = parse_command(["sweep", "--store", "s", "--hook", "h", "--grid.lr", "None", "0.001"])
    assert isinstance(cfg, SweepConfig) and cfg.grid.lr == [None, 0.001]


def test_the_check_runs_on_configs_read_from_a_run_folder(tmp_path):
    """A saved train_config.yaml edited by hand is checked when the run resumes."""
    saved = Path(tmp_path / "run")
    saved.mkdir()
    (saved / "train_config.yaml").write_text(f"store: s\nhook: {HOOK}\ngrad_clip: -2\n")
    assert main(["train", "--resume", str(saved)]) == 2
