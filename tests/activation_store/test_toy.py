"""The shipped toy ViT (`visae:toy-vit-shapes`) and its training command."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.activation_store.models.toy import TOY_MODELS
from visae.activation_store.models.toy_probes import register_ablation
from visae.activation_store.sources.shapes import ShapesSource
from visae.service.cli import main as visae

SHIPPED = TOY_MODELS["toy-vit-shapes"]
FRESH = "shapes:n=300,seed=424242,size=64"  # a seed used neither in training nor in the card's evaluation


def stated_accuracy() -> dict[str, float]:
    with safe_open(str(SHIPPED), framework="pt") as f:
        return json.loads(f.metadata()["held_out_accuracy"])


def accuracy(model, spec: str) -> dict[str, float]:
    """Per-factor accuracy through the public VisionModel path (preprocess + forward)."""
    source = ShapesSource.from_spec(spec)
    correct: dict[str, int] = {}
    for start in range(0, len(source), 100):
        idx = range(start, min(start + 100, len(source)))
        logits = model(model.preprocess.batch([source[i].image for i in idx]))
        truth = [source.factors(i) for i in idx]
        for name, out in logits.items():
            hits = (out.argmax(-1).numpy() == np.array([t[name] for t in truth])).sum()
            correct[name] = correct.get(name, 0) + int(hits)
    return {name: c / len(source) for name, c in correct.items()}


@pytest.fixture(scope="module")
def shipped():
    return load_model("visae:toy-vit-shapes")


def test_shipped_weights_are_small_and_hashed(shipped):
    assert SHIPPED.stat().st_size <= 10 * 1024 * 1024
    assert shipped.weights_sha256 is not None and len(shipped.weights_sha256) == 64
    assert SHIPPED.with_suffix(".md").is_file()


def test_shipped_weights_reach_the_stated_accuracy_on_fresh_images(shipped):
    stated, measured = stated_accuracy(), accuracy(shipped, FRESH)
    assert set(measured) == set(stated)
    for name in stated:
        # 300 images: one standard error at 95% is about 1.3 points.
        assert measured[name] >= stated[name] - 0.04, (name, measured[name], stated[name])


def test_random_weights_fail_the_same_accuracy_check():
    """The accuracy check above has teeth: the same architecture with random weights is near chance."""
    torch.manual_seed(0)
    random_model = load_model("visae:toy-vit-shapes,pretrained=false")
    stated, measured = stated_accuracy(), accuracy(random_model, "shapes:n=100,seed=424242,size=64")
    assert sum(measured[n] >= stated[n] - 0.04 for n in stated) <= 1


def test_toy_spec_has_the_timm_layout_hooks_and_factor_heads(shipped):
    layout = shipped.layout
    assert (layout.n_tokens, layout.cls_index, layout.register_indices, layout.grid) == (69, 0, (1, 2, 3, 4), (8, 8))
    assert shipped.preprocess.crop == 64 and shipped.hook_dim("blocks.0.mlp_hidden") == 4 * shipped.d_model
    pixels = shipped.preprocess.batch([ShapesSource(n=2)[i].image for i in range(2)])
    cache = shipped.run_with_cache(pixels, ["blocks.-1.resid_post", "embed"])
    assert cache[f"blocks.{shipped.n_blocks - 1}.resid_post"].shape == (2, 69, shipped.d_model)
    assert set(shipped(pixels)) == set(ShapesSource(n=0).factor_values)


def test_harvested_mlp_in_reproduces_mlp_out(shipped, tmp_path):
    """The trained toy model, harvested at one block's `mlp_in` and `mlp_out`: its own MLP maps the stored input
    to the stored output, up to the store's float16 rounding (the float32 identity: test_models.py)."""
    hooks = ["blocks.2.mlp_in", "blocks.2.mlp_out"]
    cfg = HarvestConfig(out=str(tmp_path / "store.zarr"), images="shapes:n=8,seed=3,size=64", hooks=hooks,
                        batch_size=4, num_workers=1, device="cpu", progress=False)
    store = harvest(cfg, model=shipped)
    assert store.hooks == hooks and store.d("blocks.2.mlp_in") == shipped.d_model
    mlp_in, mlp_out = (torch.from_numpy(store.read(h, 0, store.n_images)) for h in hooks)
    block = shipped.vit.blocks[2]
    with torch.no_grad():
        predicted = block.ls2(block.mlp(mlp_in))
    assert float((predicted - mlp_out).norm() / mlp_out.norm()) < 3e-3
    other = torch.from_numpy(store.read("blocks.2.mlp_in", 0, store.n_images)).roll(1, dims=1)  # wrong tokens
    with torch.no_grad():
        assert float((block.ls2(block.mlp(other)) - mlp_out).norm() / mlp_out.norm()) > 0.1


def test_unknown_toy_names_and_options_are_refused():
    with pytest.raises(ValueError, match="toy-vit-shapes"):
        load_model("visae:toy-vit-cats")
    with pytest.raises(ValueError, match="no options"):
        load_model("visae:toy-vit-shapes,depth=3")


def test_register_tokens_are_used(shipped):
    """Mean-ablating the 4 register tokens after block 1 changes predictions measurably. On this sample the shipped
    model changes 1.4% of predictions on average over the 8 heads (orientation 3.5%, pos_x and count 2.5%) and the
    count head's KL(clean || ablated) is 0.010 nats; an unused register would change nothing."""
    source = ShapesSource.from_spec("shapes:n=200,seed=31337,size=64")
    effect = register_ablation(shipped, source, "blocks.1.resid_post")
    changed = effect["changed"]
    assert np.mean(list(changed.values())) >= 0.01, changed
    assert max(changed.values()) >= 0.025, changed
    assert effect["kl"]["count"] >= 0.005, effect["kl"]


def train_tiny(out, seed=0):
    rc = visae(["zoo", "train-toy", "--out", str(out), "--steps", "3", "--seed", str(seed), "--probe-images", "30",
                "--batch-size", "4", "--eval-images", "8", "--warmup-steps", "1", "--num-workers", "0",
                "--model.depth", "2"])
    assert rc == 0
    return load_file(str(out / "toy-vit-shapes.safetensors"))


@pytest.mark.slow
def test_train_toy_command_is_deterministic(tmp_path):
    first, second = train_tiny(tmp_path / "a"), train_tiny(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = train_tiny(tmp_path / "c", seed=1)
    assert not torch.equal(first["vit.cls_token"], other["vit.cls_token"])
    assert (tmp_path / "a" / "toy-vit-shapes.md").read_text().count("| shape |") == 3
    trained = load_model("visae:toy-vit-shapes", weights=str(tmp_path / "a" / "toy-vit-shapes.safetensors"))
    assert trained.n_blocks == 2


def test_train_toy_rejects_bad_overrides(tmp_path, capsys):
    assert visae(["zoo", "train-toy", "--out", str(tmp_path), "--no_such_field", "1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
