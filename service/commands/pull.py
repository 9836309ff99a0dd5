"""`visae pull`: download one SAE of a registry release or an org/name repo through the Hub cache
(works offline from the cache with HF_HUB_OFFLINE=1), verify its checksums and print its local folder."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pull", help="download a published SAE (registry release or org/name repo)",
        description="Download one SAE through the Hugging Face cache, check it against the repo's manifest, "
                    "convert saev / ViT-Prisma releases to visae's format, and print the local folder. "
                    "`visae pull --list` shows the packaged registry.")
    p.add_argument("release", nargs="?", help="release name from the registry, or a Hub repo id org/name")
    p.add_argument("sae_id", nargs="?", help="SAE id within the release or repo")
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    p.add_argument("--out", help="also copy the SAE folder here (must not exist)")
    p.add_argument("--list", action="store_true", help="list the releases of the packaged registry")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visae.sae.hub import download_sae
    from visae.sae.pretrained import releases

    if args.list:
        for name, entry in sorted(releases().items()):
            print(f"{name}\t{entry['repo_id']}\t{entry.get('format', 'visae')}\t{entry.get('model', '')}")
        return 0
    if not args.release or not args.sae_id:
        raise ValueError("give a release (or org/name repo) and an SAE id, or --list")
    folder = download_sae(args.release, args.sae_id, revision=args.revision)
    if args.out:
        out = Path(args.out)
        if out.exists():
            raise FileExistsError(f"{out} already exists; choose a new --out folder")
        shutil.copytree(folder, out)
        folder = out
    print(folder)
    return 0
