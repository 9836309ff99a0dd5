"""`visae publish DIR... --repo ORG/NAME`: upload SAE folders to a Hugging Face Hub repo, one folder per SAE id,
with a model card and a checksum manifest. The token comes from HF_TOKEN or `huggingface-cli login`; it is never
printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Optional

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.core.fields import check_fields
from visae.service.cli import Command


@dataclass
class PublishOptions:
    dirs: Annotated[Positional[list[str]], arg(metavar="DIR...", help_behavior_hint="(required)")] = MISSING
    """SAE folders to publish"""
    repo: str = MISSING  # Hub repo id, org/name (created if missing)
    sae_ids: list[str] = field(default_factory=list)  # SAE id (folder in the repo) of each DIR (none: from cfg.json)
    base_model: Optional[str] = None  # Hub id of the base model for the card (None: derived from the model spec)
    private: bool = False  # create the repo private
    message: Optional[str] = None  # commit message

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: PublishOptions) -> int:
    from visae.sae.hub import publish

    url = publish(options.dirs, options.repo, sae_ids=options.sae_ids or None, base_model=options.base_model,
                  private=options.private, commit_message=options.message)
    print(url)
    return 0


COMMAND = Command(
    PublishOptions, run, help="upload SAE folders to a Hugging Face Hub repo",
    description="Upload SAE, transcoder or crosscoder folders (every file in each, eval/ aside) to --repo in one "
                "commit, as <hook>/<architecture>-k<k>-x<expansion>/ folders (a transcoder's <hook>-to-<out hook>/..., "
                "a crosscoder's <hook>+<hook>/...; or --sae-ids), with a README.md model card and "
                "visae_manifest.json (figures and sha256 of every file). SAEs already in the repo are kept.")
