"""`visae pull RELEASE SAE_ID`: download one SAE of a registry release or an org/name repo through the Hub cache
(works offline from the cache with HF_HUB_OFFLINE=1), verify its checksums and print its local folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

from tyro.conf import Positional, arg

from visae.core.fields import check_fields
from visae.service.cli import Command


@dataclass
class PullOptions:
    release: Annotated[Positional[Optional[str]], arg(metavar="RELEASE")] = None
    """release name from the registry, or a Hub repo id org/name"""
    sae_id: Annotated[Positional[Optional[str]], arg(metavar="SAE_ID")] = None  # SAE id within the release or repo
    revision: Optional[str] = None  # branch, tag or commit (None: main)
    out: Optional[str] = None  # also copy the SAE folder here (must not exist)
    list: bool = False  # list the releases of the packaged registry instead

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: PullOptions) -> int:
    from visae.sae.hub import download_sae
    from visae.sae.pretrained import releases

    if options.list:
        for name, entry in sorted(releases().items()):
            print(f"{name}\t{entry['repo_id']}\t{entry.get('format', 'visae')}\t{entry.get('model', '')}")
        return 0
    if not options.release or not options.sae_id:
        raise ValueError("give a release (or org/name repo) and an SAE id, or --list")
    folder = download_sae(options.release, options.sae_id, revision=options.revision)
    if options.out:
        out = Path(options.out)
        if out.exists():
            raise FileExistsError(f"{out} already exists; choose a new --out folder")
        shutil.copytree(folder, out)
        folder = out
    print(folder)
    return 0


COMMAND = Command(
    PullOptions, run, help="download a published SAE (registry release or org/name repo)",
    description="Download one SAE through the Hugging Face cache, check it against the repo's manifest, "
                "convert saev / ViT-Prisma releases to visae's format, and print the local folder. "
                "`visae pull --list` shows the packaged registry.")
