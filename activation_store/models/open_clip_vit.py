"""open_clip image towers (`open_clip:ViT-B-32/<pretrained tag>`, `open_clip:hf-hub:org/name`, and open_clip's
`open_clip:local-dir:PATH`); spec options such as `cache_dir=...` go to `open_clip.create_model`.

Hook points are on the tower's `VisionTransformer` (`visual.transformer.resblocks[i]`); forward() is the
(unnormalised) image embedding, `encode_text` the text tower's embedding, for zero-shot labels.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Protocol, cast

import open_clip
import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from visae.activation_store.layout import TokenLayout
from visae.activation_store.models.base import ActivationFn, BlockParts, Preprocess, VisionModel
from visae.activation_store.models.registry import ModelSpec, register_family
from visae.activation_store.models.weights import load_weights, read_state_dict


class _ClipModel(Protocol):
    """What an open_clip model offers this adapter (`open_clip.create_model` is annotated as returning nn.Module)."""

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...


def open_clip_preprocess(visual: VisionTransformer) -> Preprocess:
    """The tower's own preprocess_cfg: open_clip resizes the shorter side to the image size and centre-crops."""
    cfg: dict[str, Any] = getattr(visual, "preprocess_cfg")  # set on the tower by open_clip, not declared on it
    height, width = visual.image_size
    if height != width:
        raise ValueError(f"only square inputs are supported; this tower takes {height}x{width}")
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise ValueError(f"open_clip resize_mode {cfg['resize_mode']!r} is not supported; only 'shortest' is")
    return Preprocess(size=height, crop=height, mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"])


class OpenClipViT(VisionModel):
    """Hook points on an open_clip CLIP model's VisionTransformer image tower: [cls][patches], no registers."""

    def __init__(
        self,
        spec: str,
        module: nn.Module,
        model_name: str,
        preprocess: Preprocess | None = None,
        cache_dir: str | None = None,
    ):
        visual = getattr(module, "visual", None)
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"{spec!r} has a {type(visual).__name__} image tower; only open_clip's VisionTransformer is "
                "supported (timm-backed towers: use the timm: family)"
            )
        if not visual.transformer.batch_first:
            raise ValueError(f"{spec!r}: only batch-first open_clip transformers are supported")
        self.spec, self.module, self.visual, self.model_name = spec, module, visual, model_name
        self._clip = cast(_ClipModel, module)
        self.cache_dir = cache_dir
        self.preprocess = preprocess or open_clip_preprocess(visual)
        rows, cols = visual.grid_size
        self.layout = TokenLayout(
            n_tokens=1 + rows * cols,
            cls_index=0,
            register_indices=(),
            patch_indices=tuple(range(1, 1 + rows * cols)),
            grid=(rows, cols),
        )
        self._embed_input = visual.ln_pre
        # open_clip's Transformer holds ResidualAttentionBlocks in an nn.ModuleList, whose items torch types as
        # nn.Module; its `mlp` is an nn.Sequential, whose named children are typed `Tensor | Module`.
        blocks = [cast(ResidualAttentionBlock, b) for b in visual.transformer.resblocks]
        self._parts = [BlockParts(b, b.ls_1, b.ls_2, cast(nn.Linear, b.mlp.c_proj), b.ln_2, b.mlp) for b in blocks]

    def output(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._clip.encode_image(pixels)

    @functools.cached_property
    def tokenizer(self):
        return open_clip.get_tokenizer(self.model_name, cache_dir=self.cache_dir)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text-tower embeddings [len(texts), embed_dim], comparable with forward()'s image embeddings."""
        return self._clip.encode_text(self.tokenizer(texts).to(self.device))

    def _split_forward(self, block, q_x, fn: ActivationFn, k_x=None, v_x=None, attn_mask=None) -> torch.Tensor:
        """ResidualAttentionBlock.forward (self-attention) with fn applied between the two residual adds."""
        if type(block).forward is not ResidualAttentionBlock.forward or k_x is not None or v_x is not None:
            raise ValueError(f"cannot splice resid_mid in {type(block).__name__}; splice attn_out or resid_post")
        x = q_x + block.ls_1(block.attention(q_x=block.ln_1(q_x), attn_mask=attn_mask))
        x = fn(x)
        return x + block.ls_2(block.mlp(block.ln_2(x)))


def _split_name(name: str) -> tuple[str, str | None]:
    """`ViT-B-32/laion2b_s34b_b79k` -> (`ViT-B-32`, tag); `hf-hub:org/name` -> (itself, None)."""
    if name.startswith("hf-hub:"):
        return name, None
    arch, _, tag = name.partition("/")
    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise ValueError(f"unknown open_clip model {arch!r}; close matches: {close} (see open_clip.list_models())")
    if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise ValueError(
            f"unknown pretrained tag {tag!r} for open_clip {arch}; choose one of "
            f"{open_clip.list_pretrained_tags_by_model(arch)}"
        )
    return arch, tag or None


@register_family("open_clip")
def load_open_clip(spec: ModelSpec, weights: str | None) -> OpenClipViT:
    """Built-in names without a tag, `pretrained=false` and a weights file all build random-init towers."""
    model_name, tag = _split_name(spec.name)
    load_pretrained = spec.pretrained and weights is None
    try:
        module = open_clip.create_model(
            model_name,
            pretrained=tag if load_pretrained else None,
            load_weights=load_pretrained,
            **spec.library_options(),
        )
    except TypeError as e:
        raise ValueError(f"bad option for open_clip model {model_name!r} in {spec.text!r}: {e}") from e
    if weights is not None:
        state = read_state_dict(weights)
        load_weights(module.get_submodule("visual") if "conv1.weight" in state else module, state, weights)
    return OpenClipViT(spec.text, module, model_name, cache_dir=spec.options.get("cache_dir"))
