"""Version 2 of the toy ViT: per-patch heads whose targets are the `shapes` patch labels; version 1 still loads."""

import numpy as np
import torch

from visae.activation_store.models.toy import TOY_MODELS
from visae.activation_store.models.toy_training import IGNORE, patch_targets
from visae.activation_store.models.toy_vit import PATCH_HEADS, ToyViT, ToyViTConfig, load_toy_vit, save_toy_vit
from visae.activation_store.sources.shapes import SHAPES, ShapesSource


def test_patch_heads_read_every_patch_token():
    model = ToyViT(ToyViTConfig(depth=1)).eval()
    cls_logits, patch_logits = model.forward_all(torch.zeros(2, 3, 64, 64))
    assert list(patch_logits) == list(PATCH_HEADS)
    assert patch_logits["shape"].shape == (2, 64, len(SHAPES) + 1)  # background is the segmentation's extra class
    assert patch_logits["colour"].shape == (2, 64, 7)
    assert all(torch.equal(a, b) for a, b in zip(cls_logits.values(), model(torch.zeros(2, 3, 64, 64)).values()))


def test_patch_targets_follow_the_source_patch_labels():
    source = ShapesSource(n=4, seed=3)
    labels = source.patch_labels(1, (8, 8))
    targets = patch_targets(labels, background=2).numpy()
    covered = labels["object"].reshape(-1) >= 0
    shape, colour, background = (targets[PATCH_HEADS.index(k)] for k in ("shape", "colour", "background"))
    assert covered.any() and (~covered).any()
    assert np.array_equal(shape[covered], labels["shape"].reshape(-1)[covered])
    assert (shape[~covered] == len(SHAPES)).all()
    assert np.array_equal(colour[covered], labels["colour"].reshape(-1)[covered]) and (colour[~covered] == IGNORE).all()
    assert (background[~covered] == 2).all() and (background[covered] == IGNORE).all()


def test_version_1_weights_load_without_patch_heads(tmp_path):
    v1 = ToyViT(ToyViTConfig(depth=1, patch_heads=False))
    path = save_toy_vit(v1, tmp_path / "v1.safetensors")
    assert len(load_toy_vit(path).patch_heads) == 0
    assert load_toy_vit(TOY_MODELS["toy-vit-shapes"]).cfg.factor_values  # whichever version is shipped loads
