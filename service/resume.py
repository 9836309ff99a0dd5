"""`--resume FOLDER`, the flag `visae train` and `visae sweep` add: the folder's saved settings become the
defaults, and the run continues in that folder."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import tyro

from visae.service.cli import ConfigFile
from visae.training.config import TrainConfig

Config = TypeVar("Config", bound=TrainConfig)


@dataclass
class ResumeFolder(ConfigFile):
    resume: Annotated[Optional[str], tyro.conf.arg(metavar="FOLDER")] = None
    """continue the interrupted run or sweep in FOLDER from its last checkpoint, with the settings saved there"""

    def settings_file(self) -> str | None:
        from visae.training.run_dir import saved_run_config

        if self.resume and not self.config:
            saved, _ = saved_run_config(self.resume, "training run or sweep", "visae train|sweep --config FILE.yaml")
            return str(saved)
        return self.config


def in_folder(cfg: Config, folder: str | None) -> Config:
    """`cfg` kept in `folder` (its out_dir and run_name), whatever the flags said; unchanged without a folder."""
    if folder is None:
        return cfg
    return replace(cfg, out_dir=str(Path(folder).parent), run_name=Path(folder).name)
