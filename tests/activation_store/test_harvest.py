"""The harvester on a real (tiny, random-init) timm ViT and the shapes source, in this process."""

import numpy as np
import pytest
import torch
import yaml
from harvest_helpers import TINY_SPEC, save_tiny_weights
from PIL import Image

from visae.activation_store.harvest_config import HarvestConfig, load_harvest_config
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.activation_store.sources import open_source
from visae.activation_store.store import ActivationStore
from visae.service.cli import main


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(str(tmp_path_factory.mktemp("weights") / "tiny.safetensors"))


def config(weights, out, **kw) -> HarvestConfig:
    base = dict(model=TINY_SPEC, weights=weights, images="shapes:n=20,seed=0,size=32", out=str(out),
                hooks=["blocks.-1.resid_post", "blocks.0.attn_out"], batch_size=8, num_workers=2, progress=False,
                device="cpu")  # compared with CPU forward passes
    return HarvestConfig(**{**base, **kw})


def test_harvest_writes_the_activations_of_one_forward_pass(weights, tmp_path):
    store = harvest(config(weights, tmp_path / "s.zarr"))
    assert store.complete and store.n_images == 20 and store.n_chunks == 3 and store.done_mask().all()
    assert store.hooks == ["blocks.2.resid_post", "blocks.0.attn_out"]
    attrs = store.attrs
    assert attrs["model"]["weights_sha256"] and attrs["model"]["spec"] == TINY_SPEC
    assert attrs["source"]["fingerprint"] == open_source("shapes:n=20,seed=0,size=32").fingerprint()
    assert attrs["preprocess"]["crop"] == 32 and attrs["dtype"] == "float16"
    assert store.layout.n_tokens == 5 and store.layout.cls_index == 0 and store.layout.grid == (2, 2)
    assert store.factors["shape"].shape == (20,) and store.patch_labels["shape"].shape == (20, 2, 2)

    model = load_model(TINY_SPEC, weights)
    source = open_source("shapes:n=20,seed=0,size=32")
    images = [image for i in range(8, 16) if (image := source[i].image) is not None]
    assert len(images) == 8
    pixels = model.preprocess.batch(images)
    cache = model.run_with_cache(pixels, store.hooks)
    for hook in store.hooks:
        np.testing.assert_array_equal(store.acts(hook)[8:16], cache[hook].half().numpy())


@pytest.mark.parametrize("tokens,n_kept", [("cls", 1), ("patches", 4)])
def test_token_kind_keeps_only_those_tokens(weights, tmp_path, tokens, n_kept):
    full = harvest(config(weights, tmp_path / "all.zarr"))
    part = harvest(config(weights, tmp_path / f"{tokens}.zarr", tokens=tokens, dtype="bfloat16"))
    assert part.layout.n_tokens == n_kept and part.token_kind == tokens
    assert part.acts("blocks.2.resid_post").dtype == np.int16
    index = full.layout.indices(tokens)
    want = full.read("blocks.2.resid_post", 0, 20)[:, index]
    np.testing.assert_allclose(part.read("blocks.2.resid_post", 0, 20), want, rtol=2e-2, atol=2e-2)


def test_rerun_of_a_complete_store_changes_nothing_and_mismatches_are_refused(weights, tmp_path):
    cfg = config(weights, tmp_path / "s.zarr")
    first = harvest(cfg).acts("blocks.2.resid_post")[:]
    np.testing.assert_array_equal(harvest(cfg).acts("blocks.2.resid_post")[:], first)
    for change, what in [(dict(hooks=["blocks.1.resid_post"]), "hooks"), (dict(tokens="cls"), "token_kind"),
                         (dict(images="shapes:n=20,seed=1,size=32"), "source"),
                         (dict(model=TINY_SPEC.replace("depth=3", "depth=4"), weights=None), "model"),
                         (dict(dtype="bfloat16"), "dtype")]:
        with pytest.raises(ValueError, match=f"refusing to resume.*{what}: store has"):
            harvest(config(change.pop("weights", weights), tmp_path / "s.zarr", **change))


def test_other_weights_are_refused(weights, tmp_path):
    harvest(config(weights, tmp_path / "s.zarr"))
    other = save_tiny_weights(str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="refusing to resume.*weights_sha256"):
        harvest(config(other, tmp_path / "s.zarr"))


def test_interrupted_creation_is_redone(weights, tmp_path):
    store = harvest(config(weights, tmp_path / "s.zarr"))
    reference = store.acts("blocks.0.attn_out")[:]
    ActivationStore.open(store.path, mode="r+").group.attrs["initialized"] = False
    again = harvest(config(weights, tmp_path / "s.zarr"))
    assert again.complete
    np.testing.assert_array_equal(again.acts("blocks.0.attn_out")[:], reference)


def test_refuses_to_write_into_a_folder_that_is_not_a_store(weights, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an activation store"):
        harvest(config(weights, tmp_path / "notes"))


def bad_folder(root):
    """Two classes of good (odd-format) images plus the broken files of issue 2."""
    for cls, colour in (("cats", (200, 10, 10)), ("dogs", (10, 10, 200))):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(root / cls / "rgb.png")
        Image.new("CMYK", (32, 32), (0, 100, 0, 0)).save(root / cls / "cmyk.jpg")
        Image.new("P", (32, 32), 3).save(root / cls / "palette.png")
    jpeg = root / "cats" / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    (root / "cats" / "truncated.jpg").write_bytes(jpeg.read_bytes()[:600])
    jpeg.unlink()
    (root / "dogs" / "empty.png").write_bytes(b"")
    (root / "dogs" / "notes.jpg").write_text("not an image")
    Image.new("1", (20000, 20000)).save(root / "dogs" / "bomb.png")
    return root


def test_bad_files_are_skipped_and_recorded(weights, tmp_path):
    folder = bad_folder(tmp_path / "imgs")
    store = harvest(config(weights, tmp_path / "s.zarr", images=str(folder)))
    skipped = dict(store.skipped)
    assert store.n_images == 6 and store.complete
    assert {k.split("/")[-1] for k in skipped} == {"truncated.jpg", "empty.png", "notes.jpg", "bomb.png"}
    assert "bomb" in next(v for k, v in skipped.items() if k.endswith("bomb.png"))
    assert all(reason for reason in skipped.values())
    assert not any("truncated" in i or "bomb" in i for i in store.image_ids)
    assert sorted(store.labels.tolist()) == [0, 0, 0, 1, 1, 1] and store.label_names == ["cats", "dogs"]
    assert store.acts("blocks.2.resid_post").shape[0] == 6


def test_bad_files_fail_policy_names_the_file(weights, tmp_path):
    folder = bad_folder(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"cannot read image .*(truncated|empty|notes|bomb).*--bad-files skip"):
        harvest(config(weights, tmp_path / "s.zarr", images=str(folder), bad_files="fail"))


def test_n_images_counts_readable_images(weights, tmp_path):
    folder = bad_folder(tmp_path / "imgs")
    store = harvest(config(weights, tmp_path / "s.zarr", images=str(folder), n_images=4))
    assert store.n_images == 4


def test_yaml_config_with_command_line_overrides(weights, tmp_path, capsys):
    cfg_file = tmp_path / "harvest.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": TINY_SPEC, "weights": weights, "images": "shapes:n=9,size=32",
                                        "hooks": ["blocks.0.resid_pre"], "batch_size": 4, "out": "ignored"}))
    cfg = load_harvest_config(str(cfg_file), {"out": str(tmp_path / "s.zarr"), "tokens": None}, ["dtype=bfloat16"])
    assert (cfg.out, cfg.tokens, cfg.dtype, cfg.batch_size) == (str(tmp_path / "s.zarr"), "all", "bfloat16", 4)
    code = main(["harvest", "--config", str(cfg_file), "--out", str(tmp_path / "s.zarr"), "--tokens", "cls",
                 "--hooks", "blocks.-1.mlp_out", "embed", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "acts/blocks.2.mlp_out" in printed and "[9, 1, 64]" in printed and "acts/embed" in printed


def test_bad_settings_get_clear_errors(weights, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown dtype 'float8'; choose one of float16, bfloat16"):
        load_harvest_config(None, {"out": "x", "dtype": "float8"})
    with pytest.raises(ValueError, match="missing required setting 'out'"):
        load_harvest_config(None, {})
    assert main(["harvest", "--model", TINY_SPEC, "--weights", weights, "--hooks", "blocks.9.resid_post",
                 "--out", str(tmp_path / "s.zarr"), "--no-progress"]) == 2
    assert "unknown hook point 'blocks.9.resid_post'" in capsys.readouterr().err


def test_two_random_inits_of_one_spec_are_different_models(tmp_path):
    harvest(config(None, tmp_path / "s.zarr", images="shapes:n=4,seed=0,size=32"))
    with pytest.raises(ValueError, match="refusing to resume.*model: store has"):
        harvest(config(None, tmp_path / "s.zarr", images="shapes:n=4,seed=0,size=32"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tokens", [("float16", "all"), ("bfloat16", "patches")])
def test_cuda_harvest_under_autocast_matches_the_cpu_store(weights, tmp_path, dtype, tokens):
    cpu = harvest(config(weights, tmp_path / "cpu.zarr", dtype=dtype, tokens=tokens))
    gpu = harvest(config(weights, tmp_path / "gpu.zarr", dtype=dtype, tokens=tokens, device="cuda"))
    assert gpu.complete and gpu.hooks == cpu.hooks and gpu.acts(gpu.hooks[0]).dtype == cpu.acts(cpu.hooks[0]).dtype
    for hook in cpu.hooks:
        np.testing.assert_allclose(gpu.read(hook, 0, 20), cpu.read(hook, 0, 20), rtol=5e-2, atol=5e-2)
