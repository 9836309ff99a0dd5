"""Vision models behind one interface (VisionModel): hook points, token layout, preprocessing. The families' modules
(timm_vit, open_clip_vit, toy) are imported when a spec first names them."""

from visae.activation_store.models.base import BlockParts, Preprocess, VisionModel
from visae.activation_store.models.registry import ModelSpec, families, load_model, register_family

__all__ = [
    "BlockParts",
    "ModelSpec",
    "Preprocess",
    "VisionModel",
    "families",
    "load_model",
    "register_family",
]
