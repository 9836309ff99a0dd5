"""Vision models behind one interface (VisionModel): hook points, token layout, preprocessing."""

from visae.activation_store.models import open_clip_vit, timm_vit, toy
from visae.activation_store.models.base import BlockParts, Preprocess, VisionModel
from visae.activation_store.models.registry import ModelSpec, families, load_model, register_family

__all__ = [
    "BlockParts",
    "ModelSpec",
    "Preprocess",
    "VisionModel",
    "families",
    "load_model",
    "open_clip_vit",
    "register_family",
    "timm_vit",
    "toy",
]
