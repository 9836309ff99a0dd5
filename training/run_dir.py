"""A run folder: the config it was started with (for resume), and the checks that keep a resume honest.

Single runs (`training.run`) and sweeps (`training.sweep`) both keep their folder this way.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from visae.core import distributed
from visae.core.atomic import write_atomic
from visae.training.config import TrainConfig, to_yaml

CONFIG_FILE = "train_config.yaml"
SAE_DIR = "sae"
# Config fields a resume may change: they do not touch the weights. The stores may move (a copy, or the
# same store on S3); their fingerprints must stay the same.
RESUMABLE_CHANGES = ("wandb_mode", "wandb_project", "log_every_steps", "out_dir", "run_name", "store", "cross_stores")


def create_run_dir(run_dir: Path, cfg, *subdirs: str) -> None:
    """Make the folder (and `subdirs`) and save the config in it, on the main rank; every rank waits."""
    if distributed.is_main():
        for sub in ("", *subdirs):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_FILE, to_yaml(cfg))
    distributed.barrier()


def saved_run_config(run_dir: str | os.PathLike, what: str, command: str) -> tuple[Path, list[str]]:
    """The config a run folder saved, and the overrides that keep the run in that folder (for resuming)."""
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a visae {what} (no {CONFIG_FILE}); start one with `{command}`")
    return saved, [f"out_dir={run_dir.parent}", f"run_name={run_dir.name}"]


def check_same_run(checkpoint: dict, cfg: TrainConfig, fingerprint: str) -> None:
    """Refuse to resume a checkpoint under a changed config (beyond `RESUMABLE_CHANGES`) or another store."""
    saved, now = checkpoint["config"], asdict(cfg)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume: the config differs from the checkpoint's ({diffs}); resume with the "
                         "original config, or start a new run in another out_dir/run_name")
    if checkpoint["store_fingerprint"] != fingerprint:
        raise ValueError(f"cannot resume: the store at {cfg.store} has fingerprint {fingerprint}, but this run "
                         f"was trained on {checkpoint['store_fingerprint']}; point `store` (and `cross_stores`) at the "
                         "original stores or start a new run")
