"""`ToyViT`: the shipped toy model, a small timm VisionTransformer with a CLS token and register tokens plus
one classification head per ground-truth factor of the `shapes` source on the final CLS token and, from version 2,
per-patch heads on the final patch tokens: each patch predicts the factors of the object covering it, or the
background type (a segmentation objective, so the patch tokens carry the ground truth that eval scores)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from visae.activation_store.sources.shapes import ShapesSource
from visae.core.atomic import atomic_path
from visae.core.fields import bounds, check_fields

TOY_VERSION = 2  # version 1 had CLS heads only; its weights (no `patch_heads` in the config) still load
PATCH_HEADS = ("shape", "colour", "scale", "orientation", "pos_x", "pos_y", "background")
"""Factors predicted at every patch: `shape` over all patches with one extra class, "background", last (the
segmentation); `background` (the type) on background patches only; the others on the patches an object covers."""


def shapes_factor_values() -> dict[str, list[str]]:
    return ShapesSource(n=0).factor_values


def patch_classes(factor_values: dict[str, list[str]]) -> dict[str, list[str]]:
    """The classes of each patch head: the factor's values, plus "background" for the segmentation head `shape`."""
    return {name: factor_values[name] + (["background"] if name == "shape" else []) for name in PATCH_HEADS}


@dataclass
class ToyViTConfig:
    img_size: Annotated[int, bounds(ge=1)] = 64  # input side, in pixels
    patch_size: Annotated[int, bounds(ge=1)] = 8  # patch side, in pixels
    embed_dim: Annotated[int, bounds(ge=1)] = 96  # width of the residual stream
    depth: Annotated[int, bounds(ge=1)] = 6  # transformer blocks
    num_heads: Annotated[int, bounds(ge=1)] = 4  # attention heads per block
    mlp_ratio: Annotated[float, bounds(gt=0)] = 4.0  # MLP hidden width, as a multiple of embed_dim
    reg_tokens: Annotated[int, bounds(ge=0)] = 4  # register tokens after the CLS token
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel mean of the input normalisation
    std: Annotated[tuple[float, float, float], bounds(gt=0)] = (0.5, 0.5, 0.5)
    """per-channel std of the input normalisation"""
    factor_values: dict[str, list[str]] = field(default_factory=shapes_factor_values)  # classes of each factor head
    patch_heads: bool = True  # per-patch heads on the final patch tokens (version 2); false for version 1

    def __post_init__(self) -> None:
        check_fields(self)


class ToyViT(nn.Module):
    """`vit` is a plain timm VisionTransformer (no classifier); `heads` maps each factor to a linear classifier of the
    CLS token, `patch_heads` each of PATCH_HEADS to a linear classifier applied to every patch token."""

    def __init__(self, cfg: ToyViTConfig):
        super().__init__()
        self.cfg = cfg
        self.vit = VisionTransformer(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            reg_tokens=cfg.reg_tokens,
            class_token=True,
            global_pool="token",
            num_classes=0,
        )
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.embed_dim, len(v)) for name, v in cfg.factor_values.items()})
        classes = patch_classes(cfg.factor_values) if cfg.patch_heads else {}
        self.patch_heads = nn.ModuleDict({name: nn.Linear(cfg.embed_dim, len(v)) for name, v in classes.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Factor -> logits [B, classes] of the CLS heads (the predictions interventions are measured on)."""
        return self.forward_all(pixels)[0]

    def forward_all(self, pixels: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The CLS heads' logits and the patch heads' logits [B, patches, classes], from one pass of the trunk."""
        tokens = self.vit.forward_features(pixels)
        pooled = self.vit.forward_head(tokens)
        patches = tokens[:, self.vit.num_prefix_tokens:]
        return ({name: head(pooled) for name, head in self.heads.items()},
                {name: head(patches) for name, head in self.patch_heads.items()})


def save_toy_vit(model: ToyViT, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write the weights with the config in the safetensors metadata (temp name, then atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"visae_toy_config": json.dumps(asdict(model.cfg)), **(extra or {})})
    return path


def load_toy_vit(path: str | Path) -> ToyViT:
    """Rebuild a ToyViT from a file written by `save_toy_vit`, in eval mode."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"toy ViT weights not found at {path}; train them with `visae zoo train-toy`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error type for a file that is not safetensors
        raise ValueError(f"{path} is not a safetensors file ({err}); the toy ViT's weights are the .safetensors "
                         "written by `visae zoo train-toy`") from None
    if "visae_toy_config" not in meta:
        raise ValueError(f"{path} is not a visae toy ViT (no 'visae_toy_config' metadata); "
                         "use a file written by `visae zoo train-toy`")
    raw = {"patch_heads": False, **json.loads(meta["visae_toy_config"])}  # version 1 files have no patch heads
    cfg = ToyViTConfig(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
    model = ToyViT(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
