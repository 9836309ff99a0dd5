"""timm VisionTransformers (`timm:<name>`): DINOv2 with registers, DeiT (distilled too), timm's CLIP towers, plain ViTs.

`TimmViT` also serves any module built around a timm VisionTransformer (the toy family): give it the wrapping
module, the inner `vit`, a preprocessing and the function computing the wrapper's output.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any, cast

import timm
import torch
from timm.data.config import resolve_data_config
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from visae.activation_store.layout import TokenLayout
from visae.activation_store.models.base import ActivationFn, BlockParts, Preprocess, VisionModel
from visae.activation_store.models.registry import ModelSpec, register_family
from visae.activation_store.models.weights import load_weights, read_state_dict


def timm_layout(vit: VisionTransformer) -> TokenLayout:
    """Token order in timm's `_pos_embed`: [cls][dist (DeiT distilled)][registers][patches].

    The distillation token is neither a register nor a patch: it is kept only with token kind `all`.
    """
    has_cls = vit.cls_token is not None
    has_dist = getattr(vit, "dist_token", None) is not None
    first_register = int(has_cls) + int(has_dist)
    n_registers = vit.num_prefix_tokens - first_register
    rows, cols = vit.patch_embed.grid_size
    return TokenLayout(
        n_tokens=vit.num_prefix_tokens + rows * cols,
        cls_index=0 if has_cls else None,
        register_indices=tuple(range(first_register, first_register + n_registers)),
        patch_indices=tuple(range(vit.num_prefix_tokens, vit.num_prefix_tokens + rows * cols)),
        grid=(rows, cols),
    )


def timm_preprocess(vit: VisionTransformer) -> Preprocess:
    """timm's data config (mean, std, interpolation, crop_pct) at the size the model was actually built for."""
    cfg = resolve_data_config({}, model=vit)
    height, width = vit.patch_embed.img_size
    if height != width:
        raise ValueError(f"only square inputs are supported; this model takes {height}x{width}")
    if cfg.get("crop_mode", "center") != "center":
        raise ValueError(f"timm crop_mode {cfg['crop_mode']!r} is not supported; only 'center' is")
    return Preprocess(
        size=math.floor(height / cfg["crop_pct"]),
        crop=height,
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation=cfg["interpolation"],
    )


class TimmViT(VisionModel):
    """Hook points on a timm VisionTransformer whose blocks are timm `Block`s (pre-norm, optional layer-scale)."""

    def __init__(
        self,
        spec: str,
        module: nn.Module,
        vit: VisionTransformer | None = None,
        preprocess: Preprocess | None = None,
        output: Callable[[torch.Tensor], Any] | None = None,
    ):
        inner = module if vit is None else vit
        if not isinstance(inner, VisionTransformer):
            raise ValueError(f"{spec!r} is a {type(inner).__name__}; only timm VisionTransformer models are supported")
        vit = inner
        unsupported = {type(b).__name__ for b in vit.blocks if not isinstance(b, Block)}
        if unsupported:
            raise ValueError(f"{spec!r} uses blocks {sorted(unsupported)}; only timm's pre-norm `Block` is supported")
        self.spec, self.module, self.vit = spec, module, vit
        self.preprocess = preprocess or timm_preprocess(vit)
        self.layout = timm_layout(vit)
        self._output = output or module
        self._embed_input = vit.norm_pre
        # `mlp` is built from a `Type[nn.Module]` argument, so its `fc2` is typed only as `Tensor | Module`.
        self._parts = [BlockParts(b, b.ls1, b.ls2, cast(nn.Linear, b.mlp.fc2), b.norm2, b.mlp)
                       for b in vit.blocks if isinstance(b, Block)]

    def output(self, pixels: torch.Tensor) -> Any:
        return self._output(pixels)

    def _split_forward(self, block, x, fn: ActivationFn, attn_mask=None, is_causal=False) -> torch.Tensor:
        """timm Block.forward with fn applied to the residual stream between the two residual adds."""
        if type(block).forward is not Block.forward:
            raise ValueError(
                f"cannot splice resid_mid in {type(block).__name__}, whose forward differs from timm's Block; "
                "splice attn_out or resid_post instead"
            )
        x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        x = fn(x)
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


@register_family("timm")
def load_timm(spec: ModelSpec, weights: str | None) -> TimmViT:
    if not timm.is_model(spec.name):
        close = difflib.get_close_matches(spec.name, timm.list_models("vit_*"), n=5)
        raise ValueError(f"unknown timm model {spec.name!r}; close matches: {close} (see timm.list_models('vit_*'))")
    pretrained = spec.pretrained and weights is None
    try:
        module = timm.create_model(spec.name, pretrained=pretrained, **spec.library_options())
    except TypeError as e:
        raise ValueError(f"bad option for timm model {spec.name!r} in {spec.text!r}: {e}") from e
    if weights is not None:
        load_weights(module, read_state_dict(weights), weights)
    return TimmViT(spec.text, module)
