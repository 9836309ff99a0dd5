"""The harvest configuration: a typed dataclass that loads from YAML with command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

from omegaconf import MISSING

from visae.activation_store.layout import TOKEN_KINDS
from visae.activation_store.store import COMPRESSIONS, DTYPES
from visae.core.config import load_typed_config
from visae.core.fields import bounds, check_fields

BAD_FILE_POLICIES = ("skip", "fail")


@dataclass
class HarvestConfig:
    """What to harvest and how. `visae harvest --help` describes every field."""

    out: str = MISSING  # where to write the store: a local path or s3://bucket/path
    model: str = "visae:toy-vit-shapes"  # model spec, e.g. timm:vit_base_patch16_224 or open_clip:ViT-B-32/openai
    images: str = "shapes:n=512,seed=0"
    """image source: a folder, list:FILE.txt, skimage, shapes:n=1000,seed=0, hf:DATASET[,split=S,image=COL,label=COL]
    (a Hugging Face dataset, Hub id, save_to_disk folder or Parquet glob) or wds:SHARDS[,image=EXT,label=EXT]
    (WebDataset tar shards, brace pattern or glob, local or s3://); see docs/image-sources.md"""
    hooks: list[str] = field(default_factory=lambda: ["blocks.-1.resid_post"])  # hook points, e.g. blocks.-1.resid_post
    weights: Optional[str] = None  # local weights file (safetensors, or a timm/open_clip checkpoint)
    tokens: str = "all"  # which tokens to keep: all, cls, registers or patches
    n_images: Annotated[Optional[int], bounds(ge=1)] = None  # harvest the first N readable images (None: every one)
    batch_size: Annotated[int, bounds(ge=1)] = 64  # images per forward pass, and per store chunk
    dtype: str = "float16"  # stored dtype: float16 or bfloat16
    compression: str = "none"  # chunk compression: none or zstd
    bad_files: str = "skip"  # unreadable images: skip (recording the file and the reason) or fail
    num_workers: Annotated[int, bounds(ge=1)] = 4  # image-decoding threads
    device: str = "auto"  # torch device: auto (this rank's GPU if one is visible, else cpu), cpu, cuda, cuda:N
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options of an s3:// store, e.g. {anon: true}
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        check_fields(self)
        for name, value, choices in (("tokens", self.tokens, TOKEN_KINDS), ("dtype", self.dtype, DTYPES),
                                     ("compression", self.compression, COMPRESSIONS),
                                     ("bad_files", self.bad_files, BAD_FILE_POLICIES)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if not self.hooks:
            raise ValueError("no hooks given; pass e.g. --hooks blocks.-1.resid_post")


def load_harvest_config(yaml_path: str | None = None, overrides: dict | None = None,
                        dotlist: list[str] | None = None) -> HarvestConfig:
    """Defaults <- YAML file <- `overrides` (e.g. command-line flags) <- `dotlist` ("key=value" strings)."""
    return load_typed_config(HarvestConfig, yaml_path, overrides or {}, dotlist or [])
