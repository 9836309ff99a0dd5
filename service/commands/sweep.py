"""`visae sweep [--config FILE.yaml] [--FIELD VALUE ...]` and `visae sweep --resume SWEEP_DIR`: a grid of SAEs
trained in one pass over the data."""

from __future__ import annotations

from visae.service.cli import Command
from visae.service.resume import ResumeFolder, in_folder
from visae.training.sweep import SweepConfig


def run(cfg: SweepConfig, resume: str | None = None) -> int:
    from visae.core import distributed
    from visae.training.sweep import sweep

    out = sweep(in_folder(cfg, resume), resume=resume is not None)
    if distributed.is_main():
        print(out)
    return 0


COMMAND = Command(
    SweepConfig, run, invocation=ResumeFolder, help="train a grid of SAEs in one pass over a store",
    description="Train every SAE of a grid on one store and hook in a single pass over the data. The --grid.* "
                "options are lists to cross (architectures, k or sparsity coefficients, widths, LRs) and replace the "
                "single options of the same names; the other options are shared by every SAE. Under `torchrun "
                "--nproc_per_node=N` the SAEs are sharded across ranks.")
