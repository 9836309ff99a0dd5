"""Atomic training checkpoints: written to a temporary name, then renamed into place (`core.atomic`).

A checkpoint holds everything that decides the next update: the SAE(s), optimizers, schedulers,
dead-latent counters, step counters, every rank's RNG states and loader state. Resuming from one
reproduces an uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from visae.core import distributed
from visae.core.atomic import atomic_path, write_atomic

CHECKPOINT_FILE = "checkpoint.pt"
RANK_CHECKPOINTS = "checkpoint"  # folder of per-rank checkpoints (sharded sweeps)
LATEST_FILE = "latest.json"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> Path:
    """Write `state` atomically: a reader sees the previous checkpoint or this one, never a torn file."""
    path = checkpoint_path(run_dir)
    _save_atomic(state, path)
    return path


def _save_atomic(state: dict, path: Path) -> None:
    """Flushed to disk before the rename, so that a power cut cannot leave the new name on unwritten data."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def has_rank_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / RANK_CHECKPOINTS / LATEST_FILE).is_file()


def save_rank_checkpoint(run_dir: str | os.PathLike, step: int, state: dict) -> None:
    """Collective: every rank writes its own state for `step`; then the main rank commits the step.

    A checkpoint whose ranks differ (sharded sweeps: each rank holds other SAEs) is committed in two
    phases: all rank files of the step are written, then `latest.json` names it atomically, then older
    files go. A kill at any point leaves the previous committed step complete and named.
    """
    folder = Path(run_dir) / RANK_CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    _save_atomic(state, folder / _rank_file(step, distributed.rank()))
    distributed.barrier()
    if distributed.is_main():
        write_atomic(folder / LATEST_FILE, json.dumps({"step": step, "world_size": distributed.world_size()}))
        keep = {_rank_file(step, r) for r in range(distributed.world_size())} | {LATEST_FILE}
        for path in folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
    distributed.barrier()


def load_rank_checkpoint(run_dir: str | os.PathLike) -> dict:
    """This rank's state of the last committed step (see `save_rank_checkpoint`)."""
    folder = Path(run_dir) / RANK_CHECKPOINTS
    if not (folder / LATEST_FILE).is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir}; it finished already or never reached its first "
                                "checkpoint - start it again without --resume")
    try:
        latest = json.loads((folder / LATEST_FILE).read_text())
        latest = {"step": int(latest["step"]), "world_size": int(latest["world_size"])}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(_damaged(folder / LATEST_FILE, f"{type(err).__name__}: {err}")) from None
    if latest["world_size"] != distributed.world_size():
        raise ValueError(f"cannot resume: {run_dir} was checkpointed with {latest['world_size']} processes, this "
                         f"launch has {distributed.world_size()}; relaunch with the same --nproc_per_node")
    path = folder / _rank_file(latest["step"], distributed.rank())
    return _load(path, SWEEP_CHECKPOINT_KEYS)


def remove_rank_checkpoints(run_dir: str | os.PathLike) -> None:
    folder = Path(run_dir) / RANK_CHECKPOINTS
    if folder.is_dir():
        (folder / LATEST_FILE).unlink(missing_ok=True)  # uncommit first: a half-removed folder is not a checkpoint
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()


def _rank_file(step: int, rank: int) -> str:
    return f"step{step:09d}-rank{rank}.pt"


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir}; it finished already or never reached its first "
                                f"checkpoint - start it again without --resume")
    return _load(path, CHECKPOINT_KEYS)


CHECKPOINT_KEYS = ("step", "config", "store_fingerprint", "trainer", "ranks")  # what `training.run` saves
SWEEP_CHECKPOINT_KEYS = ("step", "config", "store_fingerprint", "rng", "loader", "members")  # `training.sweep`'s


def _load(path: Path, keys: tuple[str, ...]) -> dict:
    """A checkpoint's state; an empty, truncated, random, pickled or foreign file gives one line saying so."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it is about to refuse
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, RuntimeError (zip), UnpicklingError (pickles are refused), OSError, ...
        raise ValueError(_damaged(path, _why_unreadable(path, err))) from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise ValueError(_damaged(path, f"it lacks {', '.join(missing)}"))
    return state


def _why_unreadable(path: Path, err: Exception) -> str:
    """What is wrong with a file torch.load refused, in words (torch's own messages suggest unsafe loading)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as read_err:
        return f"cannot read it: {read_err.strerror or read_err}"
    if not head:
        return "the file is empty"
    if "Unsupported global" in str(err):  # torch's weights-only loader met a class
        return "it holds Python objects other than tensors, which visae refuses to unpickle (they could run code)"
    if head == b"PK":
        return "a torch archive that is truncated or corrupt"
    if head[:1] == b"\x80":
        return ("a pickle that is not a torch checkpoint" if isinstance(err, pickle.UnpicklingError) else
                "a pickle that is truncated or corrupt")
    return "not a torch checkpoint file"


def _damaged(path: Path, reason: str) -> str:
    remove = "it" if path.name == CHECKPOINT_FILE else f"the folder {path.parent}"  # a sweep's: the whole step
    return (f"{path} is not a visae checkpoint or is damaged ({reason}); delete {remove} to start the run again "
            "from step 0, or restore it from a backup")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> tuple:
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy form: np.random's global generator is an MT19937
    kind, keys, pos, has_gauss, cached = state
    return (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)


def _python_state() -> tuple:
    version, internal, gauss = random.getstate()
    return (version, torch.tensor(internal, dtype=torch.int64), gauss)
