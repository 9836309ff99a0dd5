"""Converting a local foreign SAE file, recognising its format from its content."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from visae.sae.converters.prisma import convert_prisma
from visae.sae.converters.saev import convert_saev

if TYPE_CHECKING:  # for the annotations only: sae.base imports the Hub client, which imports us
    from visae.sae.base import SAE

FOREIGN_FORMATS = ("saev", "prisma")


def sniff_format(path: Path) -> str:
    """'saev' if the file starts with a JSON header line, 'prisma' if a config.json sits beside it."""
    with open(path, "rb") as f:
        first = f.read(1)
    if first == b"{":
        return "saev"
    if path.with_name("config.json").is_file():
        return "prisma"
    raise ValueError(
        f"cannot tell the format of {path}: not a saev sae.pt (JSON header line) and no ViT-Prisma config.json "
        "beside it; pass the format explicitly"
    )


def convert_file(
    path: str | Path, fmt: str | None = None, hook_name: str | None = None, model_name: str | None = None,
    config: str | Path | None = None,
) -> SAE:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    fmt = fmt or sniff_format(path)
    if fmt == "saev":
        return convert_saev(path, hook_name=hook_name, model_name=model_name)
    if fmt == "prisma":
        return convert_prisma(path, config=config, hook_name=hook_name, model_name=model_name)
    raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(FOREIGN_FORMATS)}")
