"""`visae train [--config FILE.yaml] [--FIELD VALUE ...]` and `visae train --resume RUN_DIR`: one SAE."""

from __future__ import annotations

from visae.service.cli import Command
from visae.service.resume import ResumeFolder, in_folder
from visae.training.config import TrainConfig


def run(cfg: TrainConfig, resume: str | None = None) -> int:
    from visae.core import distributed
    from visae.training.run import train

    out = train(in_folder(cfg, resume), resume=resume is not None)
    if distributed.is_main():
        print(out)
    return 0


COMMAND = Command(
    TrainConfig, run, invocation=ResumeFolder, help="train one SAE on an activation store",
    description="Train one SAE on a hook of an activation store. Options left at None take the recipe defaults "
                "of the architecture (docs/training-recipe.md). Under `torchrun --nproc_per_node=N` the run is "
                "data-parallel.")
