"""VisionModel over timm and open_clip ViTs: hook equivalences, one-pass capture, splicing, layouts, weights files.

Every model is built with random weights (`pretrained=false`) at a small image size and depth.
"""

import copy
import json
from typing import cast

import open_clip
import pytest
import timm
import torch
from open_clip.transformer import ResidualAttentionBlock
from PIL import Image
from safetensors.torch import save_file
from timm.models.vision_transformer import Block

from visae.activation_store.layout import SITES
from visae.activation_store.models import Preprocess, families, load_model
from visae.activation_store.models.open_clip_vit import OpenClipViT

DINO = "timm:vit_small_patch14_reg4_dinov2.lvd142m,pretrained=false,img_size=56,depth=3"
DEIT = "timm:deit_tiny_distilled_patch16_224,pretrained=false,img_size=64,depth=3"
TIMM_CLIP = "timm:vit_base_patch16_clip_224.openai,pretrained=false,img_size=32,depth=2"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "ls_init_value": 0.5},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_spec(tmp_path_factory):
    """A tiny open_clip architecture registered the library's way (a JSON model config)."""
    path = tmp_path_factory.mktemp("open_clip_cfg") / "visae-tiny-ViT.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    return "open_clip:visae-tiny-ViT"


@pytest.fixture(scope="module", params=["dino", "deit", "timm_clip", "open_clip"])
def model(request, tiny_clip_spec):
    torch.manual_seed(0)
    spec = {"dino": DINO, "deit": DEIT, "timm_clip": TIMM_CLIP, "open_clip": tiny_clip_spec}[request.param]
    return load_model(spec)


def pixels(model, n=2):
    torch.manual_seed(1)
    size = model.preprocess.crop
    return torch.randn(n, 3, size, size)


def test_families_registered():
    assert {"timm", "open_clip"} <= set(families())


def test_layouts():
    dino, deit = load_model(DINO), load_model(DEIT)
    assert dino.layout.cls_index == 0 and dino.layout.register_indices == (1, 2, 3, 4)
    assert dino.layout.grid == (4, 4) and dino.layout.patch_indices == tuple(range(5, 21))
    assert deit.layout.cls_index == 0 and deit.layout.register_indices == ()
    assert deit.layout.patch_indices[0] == 2 and deit.layout.n_tokens == 2 + 16  # token 1 is the distillation token
    with pytest.raises(ValueError, match="no register tokens"):
        deit.layout.indices("registers")
    pooled = load_model(
        "timm:vit_tiny_patch16_224,pretrained=false,img_size=32,depth=1,class_token=false,global_pool=avg"
    )
    assert pooled.layout.cls_index is None and pooled.layout.patch_indices == (0, 1, 2, 3)
    assert pooled.run_with_cache(torch.zeros(1, 3, 32, 32), ["embed"])["embed"].shape == (1, 4, 192)
    with pytest.raises(ValueError, match="no CLS token"):
        pooled.layout.indices("cls")


def test_capture_shapes_and_dims(model):
    x = pixels(model)
    cache = model.run_with_cache(x, model.hook_points())
    assert list(cache) == model.hook_points()
    for hook, act in cache.items():
        assert act.shape == (2, model.layout.n_tokens, model.hook_dim(hook)), hook
    assert model.hook_dim("blocks.0.mlp_hidden") == model.d_mlp == 4 * model.d_model
    assert not any(act.requires_grad for act in cache.values())


def test_hook_equivalences(model):
    cache = model.run_with_cache(pixels(model), model.hook_points())
    for i in range(model.n_blocks):
        pre, mid, post = (cache[f"blocks.{i}.{s}"] for s in ("resid_pre", "resid_mid", "resid_post"))
        torch.testing.assert_close(mid, pre + cache[f"blocks.{i}.attn_out"], rtol=0, atol=0)
        torch.testing.assert_close(post, mid + cache[f"blocks.{i}.mlp_out"], rtol=0, atol=0)
        if i + 1 < model.n_blocks:
            assert torch.equal(post, cache[f"blocks.{i + 1}.resid_pre"])
    hidden, parts = cache["blocks.0.mlp_hidden"], model._parts[0]
    assert hidden.min() >= -0.1701  # after the GELU (whose minimum is -0.17), not before it
    torch.testing.assert_close(parts.mlp_scale(parts.mlp_down(hidden)), cache["blocks.0.mlp_out"], rtol=0, atol=0)


def library_mlp(model, i: int):
    """Block i's MLP sublayer as the library builds it (MLP, then layer-scale), found without visae's BlockParts."""
    if isinstance(model, OpenClipViT):
        clip_block = cast(ResidualAttentionBlock, model.visual.transformer.resblocks[i])
        return lambda x: clip_block.ls_2(clip_block.mlp(x))
    timm_block = cast(Block, model.vit.blocks[i])
    return lambda x: timm_block.ls2(timm_block.mlp(x))


def test_mlp_in_is_what_the_mlp_reads(model):
    """The model's own MLP applied to `mlp_in` reproduces `mlp_out`: the pair a transcoder learns to imitate."""
    hooks = [f"blocks.{i}.{site}" for i in range(model.n_blocks) for site in ("resid_mid", "mlp_in", "mlp_out")]
    cache = model.run_with_cache(pixels(model), hooks)
    for i in range(model.n_blocks):
        mlp_in, mlp_out = cache[f"blocks.{i}.mlp_in"], cache[f"blocks.{i}.mlp_out"]
        assert mlp_in.shape[-1] == model.hook_dim(f"blocks.{i}.mlp_in") == model.d_model
        torch.testing.assert_close(library_mlp(model, i)(mlp_in), mlp_out, rtol=0, atol=0)
        assert not torch.allclose(mlp_in, cache[f"blocks.{i}.resid_mid"])  # after the pre-norm, not before it
        assert not torch.allclose(library_mlp(model, i)(cache[f"blocks.{i}.resid_mid"]), mlp_out)


def test_splice_from_an_earlier_hook_replaces_the_mlp_as_a_transcoder_would(model):
    """The model's own MLP spliced in from `mlp_in` is the identity; anything else changes the output."""
    x = pixels(model)
    clean = model(x)
    own_mlp = library_mlp(copy.deepcopy(model), 1)  # a copy: the original's modules carry the splice hooks
    with model.splice_from("blocks.1.mlp_in", "blocks.1.mlp_out", own_mlp):
        assert torch.equal(model(x), clean)
    with model.splice_from("blocks.1.mlp_in", "blocks.1.mlp_out", lambda act: own_mlp(act * 0.5)):
        assert not torch.allclose(model(x), clean)
    with pytest.raises(ValueError, match="blocks.1.mlp_out is computed after blocks.1.mlp_in"):
        with model.splice_from("blocks.1.mlp_out", "blocks.1.mlp_in", lambda act: act):
            model(x)
    assert torch.equal(model(x), clean)


def test_run_with_cache_matches_full_forward_and_stops_early(model):
    x = pixels(model)
    full = {}
    handle = model._parts[-1].block.register_forward_hook(lambda m, a, out: full.setdefault("last", out))
    model(x)
    handle.remove()
    calls = []
    handle = model._parts[-1].block.register_forward_hook(lambda *_: calls.append(1))
    cache = model.run_with_cache(x, ["blocks.-1.resid_post", "blocks.0.resid_post"])
    assert torch.equal(cache[f"blocks.{model.n_blocks - 1}.resid_post"], full["last"])
    model.run_with_cache(x, ["blocks.0.mlp_hidden", "embed"])
    handle.remove()
    assert len(calls) == 1  # the second capture stopped after block 0, before the last block


def test_splice_identity_and_zero(model):
    x = pixels(model)
    clean = model(x)
    for site in SITES + ("embed",):
        hook = "embed" if site == "embed" else f"blocks.1.{site}"
        with model.splice(hook, lambda act: act):
            assert torch.equal(model(x), clean), hook
        with model.splice(hook, torch.zeros_like):
            assert not torch.allclose(model(x), clean), hook
    assert torch.equal(model(x), clean)  # the splice is gone after the context


def test_splice_is_seen_by_later_hooks(model):
    x = pixels(model)
    patches = model.layout.patch_indices

    def zero_patches(act):
        act = act.clone()
        act[:, list(patches)] = 0
        return act

    with model.splice("blocks.0.resid_mid", zero_patches):
        cache = model.run_with_cache(x, ["blocks.0.resid_mid", "blocks.0.mlp_out", "blocks.0.resid_post"])
    mid = cache["blocks.0.resid_mid"]
    assert not mid[:, list(patches)].any() and mid[:, 0].any()
    torch.testing.assert_close(cache["blocks.0.resid_post"], mid + cache["blocks.0.mlp_out"], rtol=0, atol=0)


def test_nested_splices_compose():
    model = load_model(DINO)
    x = pixels(model)
    with model.splice("blocks.1.attn_out", torch.zeros_like), model.splice("blocks.1.mlp_out", torch.zeros_like):
        cache = model.run_with_cache(x, ["blocks.1.resid_pre", "blocks.1.resid_post"])
    assert torch.equal(cache["blocks.1.resid_pre"], cache["blocks.1.resid_post"])  # the block became the identity
    for hook in ("blocks.0.mlp_hidden", "blocks.0.resid_mid"):
        with pytest.raises(ValueError, match="must return a tensor of shape"):
            with model.splice(hook, lambda act: act[:, 1:]):
                model(x)
    with model.splice("blocks.1.resid_mid", lambda act: act):
        with pytest.raises(ValueError, match="already spliced"), model.splice("blocks.1.resid_mid", lambda act: act):
            pass


def test_preprocess_gives_model_input(model):
    image = Image.new("RGB", (97, 61), (200, 30, 90))
    x = model.preprocess(image)
    assert x.shape == (3, model.preprocess.crop, model.preprocess.crop)
    assert model.preprocess.resize_crop(image).size == (model.preprocess.crop,) * 2
    assert Preprocess.from_dict(json.loads(json.dumps(model.preprocess.to_dict()))) == model.preprocess
    model(x[None])


def test_preprocess_from_library_config():
    deit = load_model(DEIT)
    assert deit.preprocess.size == int(64 / 0.9) and deit.preprocess.crop == 64  # timm crop_pct 0.9
    clip = load_model(TIMM_CLIP)
    assert clip.preprocess.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_real_open_clip_vit_b_32_name():
    model = load_model("open_clip:ViT-B-32/laion2b_s34b_b79k,pretrained=false")
    assert isinstance(model, OpenClipViT)
    assert (model.n_blocks, model.d_model, model.d_mlp, model.layout.grid) == (12, 768, 3072, (7, 7))
    assert model.preprocess.crop == 224 and model.preprocess.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    x = torch.randn(1, 3, 224, 224)
    assert model(x).shape == (1, 512)
    assert model.run_with_cache(x, ["blocks.2.resid_post"])["blocks.2.resid_post"].shape == (1, 50, 768)
    assert model.encode_text(["a photo of a cat"]).shape == (1, 512)


def test_safetensors_weights_file(tmp_path):
    source = load_model(DINO)
    path = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in source.module.state_dict().items()}, path)
    loaded = load_model(DINO, weights=str(path))
    x = pixels(source)
    assert torch.equal(loaded(x), source(x))
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64
    assert source.weights_sha256 is None


@pytest.mark.parametrize("key", ["state_dict", "model", "state_dict_ema", None])
def test_torch_checkpoint_weights_file(tmp_path, key):
    source = load_model(DEIT)
    state = {f"module.{k}": v for k, v in source.module.state_dict().items()}
    path = tmp_path / "deit.pth"
    torch.save(state if key is None else {key: state, "epoch": 3}, path)
    loaded = load_model(DEIT, weights=str(path))
    x = pixels(source)
    assert torch.equal(loaded(x), source(x))


def test_open_clip_checkpoint_full_and_image_tower_only(tmp_path, tiny_clip_spec):
    source = load_model(tiny_clip_spec)
    x = pixels(source)
    torch.save({"state_dict": source.module.state_dict()}, tmp_path / "clip.pt")
    visual = {k: v.contiguous() for k, v in source.module.get_submodule("visual").state_dict().items()}
    save_file(visual, tmp_path / "visual.safetensors")
    for name in ("clip.pt", "visual.safetensors"):
        assert torch.equal(load_model(tiny_clip_spec, weights=str(tmp_path / name))(x), source(x))


def offline_hub_snapshot(cache_dir, repo_id, monkeypatch):
    """An empty snapshot folder of `repo_id` in a Hugging Face cache, with the Hub client switched offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    revision = "0" * 40
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return snapshot


def test_timm_pretrained_loads_through_the_hub_client(tmp_path, monkeypatch):
    """`pretrained=True` (the default) goes through timm's own Hub download, here served from an offline cache."""
    name = "deit_tiny_patch16_224.fb_in1k"
    reference = timm.create_model(name, pretrained=False, depth=2).eval()
    save_file(reference.state_dict(), offline_hub_snapshot(tmp_path, f"timm/{name}", monkeypatch) / "model.safetensors")
    model = load_model(f"timm:{name},depth=2,cache_dir={tmp_path}")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.weights_sha256 is None


def test_open_clip_hf_hub_pretrained_from_offline_cache(tmp_path, monkeypatch):
    """The real `hf-hub:` path (config, preprocess and weights through huggingface_hub) from a local Hub cache."""
    snapshot = offline_hub_snapshot(tmp_path, "visae/tiny-clip", monkeypatch)
    preprocess_cfg = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.4, 0.3], "interpolation": "bilinear"}
    config = {"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": preprocess_cfg}
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))
    reference = open_clip.create_model("hf-hub:visae/tiny-clip", load_weights=False, cache_dir=str(tmp_path))
    assert isinstance(reference, open_clip.CLIP)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, snapshot / "open_clip_model.safetensors")

    model = load_model(f"open_clip:hf-hub:visae/tiny-clip,cache_dir={tmp_path}")
    assert isinstance(model, OpenClipViT)
    x = pixels(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval().encode_image(x))
    assert model.preprocess == Preprocess(32, 32, (0.1, 0.2, 0.3), (0.5, 0.4, 0.3), "bilinear")
    assert model.encode_text(["a red square"]).shape == (1, TINY_CLIP_CFG["embed_dim"])


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(DINO, weights=str(tmp_path / "missing.safetensors"))
    path = tmp_path / "other.safetensors"
    save_file({"foo": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="do not fit the architecture"):
        load_model(DINO, weights=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights"):
        load_model(DINO, weights=str(tmp_path / "junk.pth"))


def test_bad_specs_list_choices():
    with pytest.raises(ValueError, match="unknown model family 'timmm'.*open_clip"):
        load_model("timmm:vit_base_patch16_224")
    with pytest.raises(ValueError, match="no family prefix"):
        load_model("vit_base_patch16_224")
    with pytest.raises(ValueError, match="unknown timm model.*vit_small_patch14_reg4_dinov2"):
        load_model("timm:vit_smal_patch14_reg4_dinov2")
    with pytest.raises(ValueError, match="unknown open_clip model.*ViT-B-32"):
        load_model("open_clip:ViT-B-23")
    with pytest.raises(ValueError, match="unknown pretrained tag.*laion2b_s34b_b79k"):
        load_model("open_clip:ViT-B-32/laion9b")
    with pytest.raises(ValueError, match="bad option"):
        load_model("timm:vit_tiny_patch16_224,pretrained=false,no_such_option=3")
    with pytest.raises(ValueError, match="key=value"):
        load_model("timm:vit_tiny_patch16_224,pretrained")
    with pytest.raises(ValueError, match="only timm VisionTransformer"):
        load_model("timm:resnet18,pretrained=false")


def test_bad_hooks_and_token_kinds_list_choices():
    model = load_model(DINO)
    assert model.canonical("blocks.-1.resid_post") == "blocks.2.resid_post"
    for bad in ("blocks.3.resid_post", "blocks.0.mlp_pre", "resid_post", "blocks.-4.attn_out"):
        with pytest.raises(ValueError, match="site one of resid_pre"):
            model.run_with_cache(pixels(model), [bad])
    with pytest.raises(ValueError, match="choose one of all, cls, registers, patches"):
        model.layout.indices("patch")
