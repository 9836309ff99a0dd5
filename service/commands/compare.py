"""`visae compare A B`: MMCS, one-to-one Hungarian matching and feature splitting between two dictionaries
(different seeds, widths or layers), through their decoder directions."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two dictionaries: MMCS, Hungarian matching, feature splitting",
        description="Compare the decoder directions of two SAE folders trained on the same hook width. Prints a JSON "
                    "object; with different widths it also says which wide latents descend from which narrow one.")
    p.add_argument("a", help="first SAE folder")
    p.add_argument("b", help="second SAE folder")
    p.add_argument("--split-threshold", type=float, default=0.5,
                   help="minimum decoder cosine for a wide latent to count as a child of a narrow one (default 0.5)")
    p.add_argument("--out", help="also write the full result (matching and parent of every latent) to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.eval.dictionary_comparison import compare_dictionaries

    result = compare_dictionaries(args.a, args.b, split_threshold=args.split_threshold, out=args.out)
    print(json.dumps(result["summary"], indent=2))
    return 0
