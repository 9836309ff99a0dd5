"""`visae compare A B`: MMCS, one-to-one Hungarian matching and feature splitting between two dictionaries
(different seeds, widths or layers), through their decoder directions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Optional

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.core.fields import bounds, check_fields
from visae.service.cli import Command


@dataclass
class CompareOptions:
    a: Annotated[Positional[str], arg(metavar="A")] = MISSING  # first SAE folder
    b: Annotated[Positional[str], arg(metavar="B")] = MISSING  # second SAE folder, trained on the same hook width
    split_threshold: Annotated[float, bounds(ge=0, le=1)] = 0.5
    """minimum decoder cosine for a wide latent to count as a child of a narrow one"""
    out: Optional[str] = None  # also write the full result (matching and parent of every latent) to this JSON file

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: CompareOptions) -> int:
    from visae.eval.dictionary_comparison import compare_dictionaries

    result = compare_dictionaries(options.a, options.b, split_threshold=options.split_threshold, out=options.out)
    print(json.dumps(result["summary"], indent=2))
    return 0


COMMAND = Command(
    CompareOptions, run, help="compare two dictionaries: MMCS, Hungarian matching, feature splitting",
    description="Compare the decoder directions of two SAE folders trained on the same hook width. Prints a JSON "
                "object; with different widths it also says which wide latents descend from which narrow one.")
