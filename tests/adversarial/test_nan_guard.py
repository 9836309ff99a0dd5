"""A NaN guard in training: inf in the store, a bit-flipped checkpoint or an overflowing LR used to spend the whole
budget at loss = NaN and then fail blaming the SAE folder. Now the run stops within one logging window (or at the next
checkpoint, whichever comes first) with one line naming the step and the likely cause, and no checkpoint or
dictionary of non-finite weights is ever written: the last good checkpoint stays as it was, byte for byte."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from hostile import fill_store_with, interrupted_run, train_config

from visae.service.cli import main
from visae.training.checkpoint import load_checkpoint, save_checkpoint
from visae.training.logger import read_log
from visae.training.run import resume, train
from visae.training.sweep import load_sweep_config, sweep

BUDGET = 200  # steps of `train_config`
HUGE_LR = 1e30  # finite, so the config takes it, but Adam's first steps overflow float32 (lr=inf is refused up front)
# The runs stop with `training.trainer.NonFiniteTraining`, a ValueError (so `visae train` prints it on one line).


def stopped_step(err: pytest.ExceptionInfo) -> int:
    message = str(err.value)
    assert "\n" not in message
    match = re.match(r"training stopped at step (\d+): ", message)
    assert match, message
    return int(match.group(1))


def test_lr_inf_is_refused_before_anything_runs(store_path, tmp_path):
    with pytest.raises(ValueError, match=r"^lr must be > 0, got inf$"):
        replace(train_config(store_path, tmp_path), lr=float("inf"))
    assert not (tmp_path / "run").exists()


def test_an_overflowing_lr_stops_within_a_logging_window_and_writes_nothing(store_path, tmp_path):
    cfg = replace(train_config(store_path, tmp_path), lr=HUGE_LR)
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert stopped_step(err) <= cfg.log_every_steps
    assert "became NaN or infinite at step" in str(err.value) and "lr=1e+30; lower `lr`" in str(err.value)
    assert "no checkpoint was written" in str(err.value)
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "sae").exists()
    assert all(record["step"] <= cfg.log_every_steps for record in read_log(run_dir))


def test_a_checkpoint_due_before_the_next_log_window_is_not_written(store_path, tmp_path):
    """Logging every 50 steps, checkpointing every 10: the check before the checkpoint stops the run at step 10."""
    cfg = replace(train_config(store_path, tmp_path, log_every_steps=50), lr=HUGE_LR)
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert stopped_step(err) == 10
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_inf_in_the_store_stops_the_run_early_naming_the_store(store_path, tmp_path):
    fill_store_with(store_path, float("inf"), chunks=[1])
    with pytest.raises(ValueError, match="NaN or inf") as err:
        train(train_config(store_path, tmp_path))
    assert stopped_step(err) < BUDGET // 4
    assert store_path in str(err.value) and "lr=" in str(err.value)
    assert not (tmp_path / "run" / "sae").exists()


def test_inf_in_the_store_on_resume_leaves_the_last_checkpoint_untouched(store_path, tmp_path, monkeypatch):
    run_dir = interrupted_run(store_path, tmp_path, monkeypatch)
    before = (run_dir / "checkpoint.pt").read_bytes()
    fill_store_with(store_path, float("inf"))  # damaged after the checkpoint: same identity, same fingerprint
    with pytest.raises(ValueError) as err:
        resume(run_dir)
    assert 10 < stopped_step(err) <= 15
    assert store_path in str(err.value) and "was left as it was" in str(err.value)
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not (run_dir / "sae").exists()


def test_a_bit_flipped_checkpoint_stops_at_once_and_stays_as_it_was(store_path, tmp_path, monkeypatch, capsys):
    run_dir = interrupted_run(store_path, tmp_path, monkeypatch)
    state = load_checkpoint(run_dir)
    weight = state["trainer"]["sae"]["W_enc"]
    weight.view(torch.int32)[0, 0] |= 0x7F800000  # every exponent bit set: inf or NaN
    assert not torch.isfinite(weight).all()
    save_checkpoint(run_dir, state)
    before = (run_dir / "checkpoint.pt").read_bytes()

    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("visae train: error: training stopped at step 10: the SAE weights hold NaN or infinite")
    assert "damaged checkpoint" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not (run_dir / "sae").exists()


def test_a_sweep_member_with_an_overflowing_lr_stops_the_sweep_naming_it(store_path, tmp_path):
    overrides = [f"store={store_path}", "hook=blocks.0.resid_post", "total_tokens=51200", "batch_size=256",
                 "log_every_steps=5", "checkpoint_every_steps=10", "eval_tokens=1024", "wandb_mode=disabled",
                 f"out_dir={tmp_path}", "run_name=sw", "device=cpu", "grid.k=[4]", "grid.expansion_factor=[2]"]
    cfg = load_sweep_config(None, overrides)
    cfg = replace(cfg, grid=replace(cfg.grid, lr=[None, HUGE_LR]))
    with pytest.raises(ValueError, match=r"SAE topk-k4-x2-lr1e\+30: .*lr=1e\+30; lower `lr`") as err:
        sweep(cfg)
    assert stopped_step(err) <= 5
    assert not (tmp_path / "sw" / "checkpoint").exists() and not (tmp_path / "sw" / "results.csv").exists()


def test_a_healthy_run_is_not_stopped(store_path, tmp_path):
    out = train(train_config(store_path, tmp_path, total_tokens=256 * 20))
    assert (out / "cfg.json").is_file()  # trained to the end and saved
