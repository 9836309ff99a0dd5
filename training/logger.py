"""Training logs: a local JSONL file (always) and wandb (offline by default)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, cast

import numpy as np

from visae.core.atomic import write_atomic

LOG_FILE = "train_log.jsonl"


def wandb_mode(configured: str) -> str:
    """The WANDB_MODE environment variable, when set, wins over the config (tests set it to `disabled`)."""
    return os.environ.get("WANDB_MODE") or configured


class RunLogger:
    """Appends one JSON record per log step to RUN_DIR/train_log.jsonl and mirrors it to wandb.

    Only the main rank logs. On resume, records past the checkpoint's step (written by the
    interrupted process after its last checkpoint) are dropped so the file reads as one run.
    """

    def __init__(self, run_dir: Path, config: dict, mode: str, project: str, name: str | None,
                 resume_step: int | None, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / LOG_FILE
        self.wandb = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        mode = wandb_mode(mode)
        if mode != "disabled":
            import wandb

            # cast: wandb also takes WANDB_MODE's legacy values (dryrun, run), which init's stub leaves out.
            self.wandb = wandb.init(project=project, name=name, id=_wandb_id(run_dir), resume="allow",
                                    dir=str(run_dir), mode=cast(Any, mode), config=config)

    def log(self, step: int, metrics: dict[str, float], firing_log10: np.ndarray | None = None) -> None:
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        if firing_log10 is not None:
            counts, edges = np.histogram(firing_log10, bins=20, range=(-10.0, 0.0))
            record["firing_hist"] = {"log10_edges": edges.tolist(), "counts": counts.tolist()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            import wandb

            payload: dict[str, Any] = dict(metrics)
            if firing_log10 is not None:
                # cast: Histogram histograms any array (np.histogram); its stub asks for a Sequence.
                payload["firing_log10_freq"] = wandb.Histogram(cast(Any, firing_log10))
            self.wandb.log(payload, step=step)

    def finish(self, summary: dict[str, float]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish()

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= step]
        write_atomic(self.path, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> float:
    """The step of one JSONL record; a line cut short by a kill counts as past every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def _wandb_id(run_dir: Path) -> str:
    """A stable wandb run id per run folder, so a resumed run continues the same wandb run."""
    id_file = Path(run_dir) / "wandb_id.txt"
    if not id_file.exists():
        write_atomic(id_file, secrets.token_hex(6))
    return id_file.read_text().strip()


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line]
