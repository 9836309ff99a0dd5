"""Checkpoints: an empty, truncated, random, pickled or foreign `checkpoint.pt` gives one clear line (the file, what is
wrong, the fix) instead of a raw EOFError/RuntimeError/UnpicklingError, and is left as it was; the temporary files a
killed process left in a run folder are removed when the next run starts, those of live processes kept."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from hostile import interrupted_run, train_config

from visae.service.cli import main
from visae.training.checkpoint import load_rank_checkpoint
from visae.training.run import resume, train


class Foreign:
    """Pickled by a checkpoint that is not visae's: torch's weights-only loader refuses to build it."""


def _pickled(_: bytes) -> bytes:
    return pickle.dumps({"step": 3, "config": {}, "payload": Foreign()})


def _torch_object(_: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"model": Foreign()}, buffer)
    return buffer.getvalue()


def _foreign_dict(_: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, buffer)
    return buffer.getvalue()


DAMAGE = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "random": lambda good: os.urandom(4096),
    "pickled": _pickled,
    "torch-object": _torch_object,
    "foreign": _foreign_dict,
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A run folder holding a real checkpoint (step 10), shared read-only: each test copies it."""
    from visae.training.synthetic import synthetic_store

    root = tmp_path_factory.mktemp("checkpointed")
    store = synthetic_store(str(root / "store.zarr"), d=16, n_images=64).path
    with pytest.MonkeyPatch.context() as monkeypatch:
        return interrupted_run(store, root / "runs", monkeypatch)


def copy_run(good_run, tmp_path):
    import shutil

    return shutil.copytree(good_run, tmp_path / "runs" / "run")


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_gives_one_clear_line_and_is_kept(good_run, tmp_path, kind):
    run_dir = copy_run(good_run, tmp_path)
    path = run_dir / "checkpoint.pt"
    damaged = DAMAGE[kind](path.read_bytes())
    path.write_bytes(damaged)
    with pytest.raises(ValueError) as err:
        resume(run_dir)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is not a visae checkpoint or is damaged (")
    assert "delete it to start the run again" in message and "restore it" in message
    assert path.read_bytes() == damaged  # nothing lost: the file is left for the user to decide


def test_the_cli_prints_it_as_one_error_line(good_run, tmp_path, capsys):
    run_dir = copy_run(good_run, tmp_path)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    assert main(["train", "--resume", str(run_dir)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("visae train: error: ") and "not a visae checkpoint or is damaged" in lines[-1]
    assert "Traceback" not in "\n".join(lines)


def test_a_good_checkpoint_still_resumes(good_run, tmp_path):
    run_dir = copy_run(good_run, tmp_path)
    assert (resume(run_dir) / "cfg.json").is_file()


def test_a_damaged_sweep_checkpoint_is_named_too(tmp_path):
    folder = tmp_path / "sweep" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "latest.json").write_text(json.dumps({"step": 20, "world_size": 1}))
    (folder / "step000000020-rank0.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"step000000020-rank0\.pt is not a visae checkpoint or is damaged"):
        load_rank_checkpoint(tmp_path / "sweep")
    (folder / "latest.json").write_text("{")
    with pytest.raises(ValueError, match=r"latest\.json is not a visae checkpoint or is damaged"):
        load_rank_checkpoint(tmp_path / "sweep")


# -- stale temporary files ---------------------------------------------------------------------------------------
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def plant(run_dir, dead: int, live: int) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "dead_checkpoint": run_dir / f".checkpoint.pt.tmp-{dead}",
        "dead_config": run_dir / f".train_config.yaml.tmp-{dead}",
        "dead_folder": run_dir / f".sae.tmp-{dead}",
        "dead_old": run_dir / f".sae.old-{dead}",
        "live_checkpoint": run_dir / f".checkpoint.pt.tmp-{live}",
        "own": run_dir / f".checkpoint.pt.tmp-{os.getpid()}",
        "not_ours": run_dir / f".notes.tmp-{dead}x",
        "user_file": run_dir / "checkpoint.pt.tmp-1",
    }
    for name, path in files.items():
        if name in ("dead_folder", "dead_old"):
            path.mkdir()
            (path / "sae_weights.safetensors").write_bytes(b"half")
        else:
            path.write_bytes(b"half-written")
    return files


def test_remove_stale_temporaries_only_touches_those_of_dead_processes(tmp_path, live_pid):
    from visae.core.atomic import remove_stale_temporaries

    files = plant(tmp_path / "run", dead_pid(), live_pid)
    removed = remove_stale_temporaries(tmp_path / "run")
    gone = {"dead_checkpoint", "dead_config", "dead_folder", "dead_old"}
    assert set(removed) == {files[name] for name in gone}
    for name, path in files.items():
        assert path.exists() == (name not in gone), name


def test_a_new_run_start_removes_the_stale_temporaries(tmp_path, live_pid):
    from visae.training.synthetic import synthetic_store

    store = synthetic_store(str(tmp_path / "store.zarr"), d=16, n_images=64).path
    files = plant(tmp_path / "runs" / "run", dead_pid(), live_pid)
    train(train_config(store, tmp_path / "runs", total_tokens=256 * 10))
    assert not files["dead_checkpoint"].exists() and not files["dead_folder"].exists()
    assert files["live_checkpoint"].exists() and files["user_file"].exists()


def test_a_resume_removes_them_too(good_run, tmp_path, live_pid):
    run_dir = copy_run(good_run, tmp_path)
    files = plant(run_dir, dead_pid(), live_pid)
    resume(run_dir)
    assert not files["dead_checkpoint"].exists() and not files["dead_old"].exists()
    assert files["live_checkpoint"].exists()
