"""`ToyViT`: the shipped toy model, a small timm VisionTransformer with a CLS token and register tokens plus
one classification head per ground-truth factor of the `shapes` source (all heads read the final CLS token)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from visae.activation_store.sources.shapes import ShapesSource
from visae.core.atomic import atomic_path


def shapes_factor_values() -> dict[str, list[str]]:
    return ShapesSource(n=0).factor_values


@dataclass
class ToyViTConfig:
    img_size: int = 64  # input side, in pixels
    patch_size: int = 8  # patch side, in pixels
    embed_dim: int = 96  # width of the residual stream
    depth: int = 6  # transformer blocks
    num_heads: int = 4  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width, as a multiple of embed_dim
    reg_tokens: int = 4  # register tokens after the CLS token
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel mean of the input normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel std of the input normalisation
    factor_values: dict[str, list[str]] = field(default_factory=shapes_factor_values)  # classes of each factor head


class ToyViT(nn.Module):
    """`vit` is a plain timm VisionTransformer (no classifier); `heads` maps each factor to a linear classifier."""

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

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.vit(pixels)
        return {name: head(pooled) for name, head in self.heads.items()}


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
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "visae_toy_config" not in meta:
        raise ValueError(f"{path} is not a visae toy ViT (no 'visae_toy_config' metadata); "
                         "use a file written by `visae zoo train-toy`")
    raw = json.loads(meta["visae_toy_config"])
    cfg = ToyViTConfig(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})
    model = ToyViT(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
