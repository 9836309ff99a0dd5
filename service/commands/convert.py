"""`visae convert SOURCE OUT`: turn a local saev `sae.pt` or ViT-Prisma checkpoint (+ config.json) into a visae
SAE folder, recording the conversion in cfg.json metadata. Files needing full unpickling are refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from omegaconf import MISSING
from tyro.conf import Positional, arg

from visae.core.fields import check_fields
from visae.service.cli import Command


@dataclass
class ConvertOptions:
    source: Annotated[Positional[str], arg(metavar="SOURCE")] = MISSING
    """checkpoint file: a saev sae.pt, or a ViT-Prisma .pt with config.json beside it"""
    out: Annotated[Positional[str], arg(metavar="OUT")] = MISSING  # SAE folder to write
    format: Optional[Literal["saev", "prisma"]] = None  # source format (None: recognised from the file)
    prisma_config: Optional[str] = None  # the ViT-Prisma config.json (None: the one next to the checkpoint)
    hook: Optional[str] = None  # visae hook name, e.g. blocks.-2.resid_post (None: from the source's config)
    model: Optional[str] = None  # visae model spec the SAE was trained on, e.g. open_clip:ViT-B-16/openai

    def __post_init__(self) -> None:
        check_fields(self)


def run(options: ConvertOptions) -> int:
    from visae.sae.converters import convert_file

    sae = convert_file(options.source, fmt=options.format, hook_name=options.hook, model_name=options.model,
                       config=options.prisma_config)
    print(sae.save(options.out))
    return 0


COMMAND = Command(
    ConvertOptions, run, help="convert a saev or ViT-Prisma SAE checkpoint to visae's format",
    description="Read a foreign SAE checkpoint with torch.load(weights_only=True) only, map its hook name to "
                "visae's, and write a visae SAE folder (SAELens format).")
