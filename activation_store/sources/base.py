"""Image sources: random access to images by index, and `open_source(spec)`, the one entry point.

Specs: a directory path or `folder:PATH`, `list:FILE.txt`, `skimage`, `shapes:n=1000,seed=0,size=64`,
`hf:DATASET,split=...` (Hugging Face datasets) and `wds:SHARDS,image=jpg` (WebDataset tar shards).
A source never raises for a broken file: its record has `image=None` and an `error` saying why, and the
harvester decides whether to skip or stop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from omegaconf import OmegaConf
from PIL import Image


@dataclass
class ImageRecord:
    """One image (RGB) or the reason it could not be read."""

    id: str
    image: Image.Image | None
    label: int = -1
    error: str | None = None


class ImageSource(abc.ABC):
    """Indexable images. Subclasses set `spec` and implement __len__, __getitem__ and fingerprint()."""

    spec: str
    label_names: list[str] | None = None
    factor_names: list[str] = []
    factor_values: dict[str, list[str]] = {}
    segmentation: dict | None = None
    """The patch-label array that is a segmentation, {"factor": name, "background": class name for -1, or None
    when -1 means unlabelled}; eval scores dictionaries against it (docs/metrics.md, "Segmentations")."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, i: int) -> ImageRecord: ...

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A sha256 that changes whenever the images this source yields may change."""

    def factors(self, i: int) -> dict[str, int]:
        """Ground-truth factor values of image i (indices into factor_values[name]); empty if none."""
        return {}

    def patch_labels(self, i: int, grid: tuple[int, int], crop_fraction: float = 1.0) -> dict[str, np.ndarray] | None:
        """Per-patch factor values of image i at a patch grid: int16 [rows, cols], -1 = background; None if none.
        The grid covers the centred square the model sees, its side `crop_fraction` of the shorter side."""
        return None

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for a source of {len(self)} images")
        return i % len(self)


SourceFactory = Callable[[str], ImageSource]
_SOURCES: dict[str, SourceFactory] = {}


def register_source(prefix: str) -> Callable[[SourceFactory], SourceFactory]:
    """Register `factory(rest_of_spec) -> ImageSource` for specs `prefix` or `prefix:rest`."""

    def decorator(factory: SourceFactory) -> SourceFactory:
        _SOURCES[prefix] = factory
        return factory

    return decorator


def source_kinds() -> list[str]:
    return sorted(_SOURCES)


def parse_options(text: str) -> dict:
    """`n=1000,seed=0,size=64` -> {"n": 1000, "seed": 0, "size": 64} (values typed as YAML scalars)."""
    items = [item for item in text.split(",") if item]
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ValueError(f"source options must be key=value separated by commas, got {bad} in {text!r}")
    # to_container of a DictConfig is a dict; OmegaConf's annotation covers every kind of config
    return cast(dict, OmegaConf.to_container(OmegaConf.from_dotlist(items))) if items else {}


def split_location(text: str) -> tuple[str, dict]:
    """`LOCATION,key=value,...` -> (LOCATION, options). The location ends at the first comma outside braces, so
    brace patterns such as `shard-{000..009}.tar` or `{train,val}/*.parquet` keep their commas."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            return text[:i], parse_options(text[i + 1:])
    return text, {}


def check_options(kind: str, options: dict, known: dict, example: str) -> dict:
    """`known` (the defaults) updated with `options`; an unknown option is refused with the known ones named."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown {kind} option(s) {unknown}; use {', '.join(known)}, e.g. {example!r}")
    return {**known, **options}


def open_source(spec: str) -> ImageSource:
    """The image source a spec names: a directory, `folder:PATH`, `list:FILE.txt`, `skimage`, `shapes:...`,
    `hf:...` or `wds:...`."""
    prefix, _, rest = spec.partition(":")
    if prefix in _SOURCES:
        return _SOURCES[prefix](rest)
    if Path(spec).is_dir():
        return _SOURCES["folder"](spec)
    raise ValueError(
        f"unknown image source {spec!r}: not a directory, and not one of the kinds {', '.join(source_kinds())} "
        "(write e.g. 'folder:PATH', 'list:FILE.txt', 'skimage', 'shapes:n=1000,seed=0,size=64', "
        "'hf:ILSVRC/imagenet-1k,split=validation', 'wds:/data/shard-{000..009}.tar')"
    )
