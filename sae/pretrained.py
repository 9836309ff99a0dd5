"""The packaged registry of SAE releases (`sae/pretrained.yaml`), like SAELens's pretrained_saes.yaml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

FORMATS = ("visae", "saev", "prisma")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PretrainedSAE:
    """Where one SAE lives on the Hub and how to read it."""

    repo_id: str
    sae_id: str
    format: str = "visae"
    path: str | None = None
    hook_name: str | None = None
    model: str | None = None
    manifest: str | None = None
    release: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=1)
def releases() -> dict[str, dict[str, Any]]:
    """Every release of the packaged registry."""
    text = resources.files("visae.sae").joinpath("pretrained.yaml").read_text()
    return yaml.safe_load(text)


def resolve(release_or_repo_id: str, sae_id: str) -> PretrainedSAE:
    """A registry release name, or any `org/name` repo id (then a visae-format repo)."""
    entry = releases().get(release_or_repo_id)
    if entry is None:
        if not _REPO_ID.match(release_or_repo_id):
            raise ValueError(
                f"{release_or_repo_id!r} is neither a known release nor an 'org/name' repo id; "
                f"known releases: {', '.join(sorted(releases()))}"
            )
        return PretrainedSAE(repo_id=release_or_repo_id, sae_id=sae_id)
    fmt = entry.get("format", "visae")
    if fmt not in FORMATS:
        raise ValueError(f"release {release_or_repo_id} has unknown format {fmt!r}; expected one of {FORMATS}")
    common: dict[str, Any] = dict(format=fmt, model=entry.get("model"), release=release_or_repo_id)
    if entry.get("manifest"):
        return PretrainedSAE(repo_id=entry["repo_id"], sae_id=sae_id, manifest=entry["manifest"], **common)
    saes = {s["id"]: s for s in entry.get("saes", [])}
    if sae_id not in saes:
        raise ValueError(f"release {release_or_repo_id} has no SAE {sae_id!r}; choose one of {', '.join(saes)}")
    sae = saes[sae_id]
    return PretrainedSAE(
        repo_id=sae.get("repo_id", entry["repo_id"]),
        sae_id=sae_id,
        path=sae.get("path"),
        hook_name=sae.get("hook_name"),
        figures=dict(sae.get("figures") or {}),
        **common,
    )
