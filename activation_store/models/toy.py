"""The `visae` model family: `visae:toy-vit-shapes`, the toy ViT shipped inside the package.

    load_model("visae:toy-vit-shapes")                          # the shipped, trained weights
    load_model("visae:toy-vit-shapes", weights="my.safetensors") # weights from `visae zoo train-toy`
    load_model("visae:toy-vit-shapes,pretrained=false")         # same architecture, random weights

Its forward returns a dict factor -> logits (one head per `shapes` factor), so spliced-in effects can be measured on
real predictions.
"""

from __future__ import annotations

from pathlib import Path

from visae.activation_store.models.base import Preprocess
from visae.activation_store.models.registry import ModelSpec, register_family
from visae.activation_store.models.timm_vit import TimmViT
from visae.activation_store.models.toy_vit import ToyViT, ToyViTConfig, load_toy_vit
from visae.core.file_hash import file_sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
TOY_MODELS = {"toy-vit-shapes": WEIGHTS_DIR / "toy-vit-shapes.safetensors"}


def toy_preprocess(cfg: ToyViTConfig) -> Preprocess:
    return Preprocess(size=cfg.img_size, crop=cfg.img_size, mean=cfg.mean, std=cfg.std, interpolation="bicubic")


def wrap_toy(spec: str, module: ToyViT) -> TimmViT:
    return TimmViT(spec, module.eval(), vit=module.vit, preprocess=toy_preprocess(module.cfg), output=module)


@register_family("visae")
def load_toy(spec: ModelSpec, weights: str | None) -> TimmViT:
    if spec.name not in TOY_MODELS:
        raise ValueError(f"unknown visae model {spec.name!r}; choose one of {', '.join(TOY_MODELS)}")
    if spec.library_options():
        raise ValueError(f"visae models take no options except pretrained=false, got {spec.library_options()}")
    if weights is not None:
        return wrap_toy(spec.text, load_toy_vit(weights))
    if not spec.pretrained:
        return wrap_toy(spec.text, ToyViT(ToyViTConfig()))
    shipped = TOY_MODELS[spec.name]
    model = wrap_toy(spec.text, load_toy_vit(shipped))
    model.weights_sha256 = file_sha256(shipped)
    return model
