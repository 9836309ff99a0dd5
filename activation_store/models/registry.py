"""Model families by spec prefix, and `load_model`, the one entry point.

A spec is `family:name` written the way the family's library spells the name, optionally followed by
`,key=value` options that go to the library's constructor, e.g.

    timm:vit_small_patch14_reg4_dinov2.lvd142m
    timm:vit_small_patch14_reg4_dinov2.lvd142m,pretrained=false,img_size=56,depth=2
    open_clip:ViT-B-32/laion2b_s34b_b79k
    open_clip:hf-hub:org/name

`pretrained=false` builds the same architecture with random weights and never touches the network (tests use it);
a `weights` file implies it, its tensors replacing the random ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from omegaconf import OmegaConf

from visae.activation_store.models.base import VisionModel
from visae.core.file_hash import file_sha256


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: `text` is the spec as given, options are typed (`false` -> False, `56` -> 56)."""

    text: str
    family: str
    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        family, sep, rest = text.partition(":")
        if not sep or not rest:
            raise ValueError(
                f"model spec {text!r} has no family prefix; write '<family>:<name>' with family one of "
                f"{', '.join(families())}, e.g. 'timm:vit_base_patch16_224'"
            )
        name, *items = rest.split(",")
        bad = [item for item in items if "=" not in item]
        if bad:
            raise ValueError(f"model spec options must be key=value, got {bad} in {text!r}")
        # to_container of a DictConfig is a dict; OmegaConf's annotation covers every kind of config
        options = cast(dict, OmegaConf.to_container(OmegaConf.from_dotlist(items))) if items else {}
        return cls(text=text, family=family, name=name, options=options)

    @property
    def pretrained(self) -> bool:
        return bool(self.options.get("pretrained", True))

    def library_options(self) -> dict:
        """The options to pass on to the family's constructor (everything except `pretrained`)."""
        return {k: v for k, v in self.options.items() if k != "pretrained"}


FamilyLoader = Callable[[ModelSpec, "str | None"], VisionModel]
_FAMILIES: dict[str, FamilyLoader] = {}
# The shipped families, imported on first use: open_clip alone takes seconds to import (it pulls in
# transformers and torchvision), and every CLI command and torchrun rank would pay for it.
_BUILT_IN = {"timm": "timm_vit", "open_clip": "open_clip_vit", "visae": "toy"}


def register_family(prefix: str) -> Callable[[FamilyLoader], FamilyLoader]:
    """Register `loader(spec: ModelSpec, weights: str | None) -> VisionModel` for specs `prefix:...`.

    The loader builds the model with random weights when `weights` is given or `spec.pretrained` is False, and
    loads `weights` into it; load_model does the rest (device, eval mode, weights hash).
    """

    def decorator(loader: FamilyLoader) -> FamilyLoader:
        _FAMILIES[prefix] = loader
        return loader

    return decorator


def families() -> list[str]:
    return sorted(set(_FAMILIES) | set(_BUILT_IN))


def _loader(family: str) -> FamilyLoader:
    if family not in _FAMILIES and family in _BUILT_IN:
        importlib.import_module(f"visae.activation_store.models.{_BUILT_IN[family]}")  # registers itself
    return _FAMILIES[family]


def load_model(spec: str, weights: str | None = None, device: str = "cpu") -> VisionModel:
    """Build the model a spec names (see module docstring), in eval mode on `device`."""
    parsed = ModelSpec.parse(spec)
    if parsed.family not in families():
        raise ValueError(f"unknown model family {parsed.family!r} in {spec!r}; choose one of {', '.join(families())}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights!r} does not exist")
    model = _loader(parsed.family)(parsed, None if weights is None else str(weights))
    model.module.eval().requires_grad_(False).to(device)
    if weights is not None:
        model.weights_sha256 = file_sha256(weights)
    return model
