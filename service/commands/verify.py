"""`visae verify STORE`: the full check of an activation store: the cheap checks that training and evaluation run
on open (attributes against arrays, `complete` against the done-mask, every chunk file present at its size), then
every chunk read back with its values checked finite. Exit status 0 when clean, 1 when problems were found."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.core.fields import check_fields
from visae.service.cli import Command


@dataclass
class VerifyOptions:
    store: Annotated[Positional[str], arg(metavar="STORE")] = MISSING  # activation store (path or s3://...)
    read_chunks: bool = True  # read every chunk back and check its values are finite (--no-read-chunks: cheap checks)
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: VerifyOptions) -> int:
    from visae.activation_store.store import ActivationStore
    from visae.activation_store.verify import chunk_problems, store_problems

    store = ActivationStore.open(options.store)
    problems = store_problems(store)
    if not problems and not store.complete:
        done = store.done_mask()
        print(f"{store.path}: not complete ({int(done.sum())} of {done.size} chunks written); rerun the same "
              "`visae harvest` to finish it", file=sys.stderr)
    if options.read_chunks and not any(p.chunk is None for p in problems):
        problems += list(chunk_problems(store, progress=options.progress))
    for problem in problems:
        print(problem.describe(store.path), file=sys.stderr)
    if problems:
        print(f"{store.path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found", file=sys.stderr)
        return 1
    n_chunks = int(store.done_mask().sum())
    print(f"{store.path}: ok ({len(store.hooks)} hook(s), {n_chunks} chunks, {store.n_images} images"
          f"{', every value finite' if options.read_chunks else ', chunk contents not read'})")
    return 0


COMMAND = Command(
    VerifyOptions, run, help="check an activation store: attributes, done-mask, chunk files, finite values",
    description="Run the cheap checks that training and evaluation run when they open a store, then read every "
                "chunk back and check it decodes to finite values. Each problem is reported with its hook, chunk, "
                "image range and fix; exit status 1 when any was found, 0 when the store is clean.")
