"""Converters from saev and ViT-Prisma checkpoints, on files written in their documented layouts."""

import json
from dataclasses import dataclass

import pytest
import torch

from visae.sae import SAE
from visae.sae.converters import convert_file, convert_prisma, convert_saev
from visae.sae.converters.hooks import prisma_hook
from visae.service.cli import main as visae

pytestmark = pytest.mark.usefixtures("one_thread")




@dataclass
class PrismaLikeConfig:
    """Stands for ViT-Prisma's pickled VisionModelSAERunnerConfig object."""

    d_in: int = 8


def weights(d=8, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d, n, generator=g) * 0.5,
        "b_enc": torch.randn(n, generator=g) * 0.1,
        "W_dec": torch.randn(n, d, generator=g) * 0.5,
        "b_dec": torch.randn(d, generator=g) * 0.1,
    }


def write_saev(path, state, activation, schema=2):
    """saev's layout: one JSON header line, then torch.save(state_dict) into the same file."""
    header = {"schema": schema, "cfg": {"d_vit": 8, "exp_factor": 4, "activation": activation},
              "commit": "abc123", "lib": "1.0"}
    with open(path, "wb") as fd:
        fd.write((json.dumps(header) + "\n").encode())
        torch.save(state, fd)


@pytest.fixture
def x():
    return torch.randn(20, 8, generator=torch.Generator().manual_seed(5))


def test_saev_relu_converts_exactly(tmp_path, x):
    w = weights()
    write_saev(tmp_path / "sae.pt", w, {"cls": "Relu", "params": {}})
    sae = convert_saev(tmp_path / "sae.pt", layer=-2, model_name="open_clip:ViT-B-16/openai")
    assert isinstance(sae, SAE)  # the converters are typed as returning any nn.Module
    expected = torch.relu(x @ w["W_enc"] + w["b_enc"])  # saev: no b_dec subtraction
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), expected, atol=1e-5)
        assert torch.allclose(sae(x), expected @ w["W_dec"] + w["b_dec"], atol=1e-5)
    record = sae.cfg.metadata["conversion"]
    assert record["from"] == "saev" and len(record["source_sha256"]) == 64
    assert sae.cfg.metadata["hook_name"] == "blocks.-2.resid_post"
    assert sae.architecture == "standard" and not sae.cfg.apply_b_dec_to_input


def test_saev_topk_and_jumprelu(tmp_path, x):
    w = weights()
    write_saev(tmp_path / "topk.pt", w, {"cls": "TopK", "params": {"top_k": 3}})
    sae = convert_saev(tmp_path / "topk.pt")
    assert isinstance(sae, SAE)
    pre = x @ w["W_enc"] + w["b_enc"]
    values, indices = pre.topk(3, dim=-1)
    expected = torch.zeros_like(pre).scatter(1, indices, values.relu())
    with torch.no_grad():
        assert sae.architecture == "topk" and sae.cfg.k == 3
        assert torch.allclose(sae.encode(x), expected, atol=1e-5)

    threshold = torch.rand(32) * 0.3
    write_saev(tmp_path / "jr.pt", {**w, "activation.threshold": threshold}, {"cls": "Relu", "params": {}})
    sae = convert_saev(tmp_path / "jr.pt")
    assert isinstance(sae, SAE)
    with torch.no_grad():
        assert sae.architecture == "jumprelu"
        assert torch.allclose(sae.encode(x), pre * (pre > threshold), atol=1e-5)


def test_prisma_converts_exactly_and_maps_hook(tmp_path, x):
    w = weights(seed=1)
    torch.save({"state_dict": w}, tmp_path / "n_images_2600058.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "d_in": 8, "d_sae": 32, "hook_point": "blocks.9.hook_resid_post", "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4}, "model_name": "open-clip:laion/CLIP-ViT-B-32", "cls_token_only": True,
        "normalize_activations": None,
    }))
    sae = convert_file(tmp_path / "n_images_2600058.pt")
    assert isinstance(sae, SAE)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    values, indices = pre.topk(4, dim=-1)
    expected = torch.zeros_like(pre).scatter(1, indices, values.relu())
    with torch.no_grad():
        assert torch.allclose(sae.encode(x), expected, atol=1e-5)
        assert torch.allclose(sae(x), expected @ w["W_dec"] + w["b_dec"], atol=1e-5)
    assert sae.cfg.metadata["hook_name"] == "blocks.9.resid_post"
    assert sae.cfg.metadata["token_kind"] == "cls"
    assert sae.cfg.metadata["conversion"]["source_hook"] == "blocks.9.hook_resid_post"


def test_prisma_hook_names():
    assert prisma_hook("blocks.3.hook_mlp_out") == "blocks.3.mlp_out"
    assert prisma_hook("blocks.3.mlp.hook_post") == "blocks.3.mlp_hidden"
    with pytest.raises(ValueError, match="no visae equivalent"):
        prisma_hook("blocks.3.attn.hook_z")


def test_refuses_checkpoint_needing_full_unpickling(tmp_path):
    torch.save({"cfg": PrismaLikeConfig(), "state_dict": weights()}, tmp_path / "w.pt")
    (tmp_path / "config.json").write_text(json.dumps({"d_in": 8, "hook_point": "blocks.1.hook_resid_post"}))
    with pytest.raises(ValueError, match=r"needs full unpickling .*weights_only=True"):
        convert_prisma(tmp_path / "w.pt")


def test_refuses_runtime_normalisation_and_bad_headers(tmp_path):
    torch.save(weights(), tmp_path / "w.pt")
    (tmp_path / "config.json").write_text(json.dumps({"d_in": 8, "normalize_activations": "constant_norm_rescale"}))
    with pytest.raises(ValueError, match="rescales each input at run time"):
        convert_prisma(tmp_path / "w.pt")
    (tmp_path / "bad.pt").write_bytes(b"{not json\n")
    with pytest.raises(ValueError, match="first line is not a JSON header"):
        convert_saev(tmp_path / "bad.pt")


def test_visae_convert_command_writes_a_loadable_folder(tmp_path, x, capsys):
    w = weights(seed=2)
    write_saev(tmp_path / "sae.pt", w, {"cls": "TopK", "params": {"top_k": 5}})
    code = visae(["convert", str(tmp_path / "sae.pt"), str(tmp_path / "out"), "--hook", "blocks.-2.resid_post"])
    assert code == 0
    loaded = SAE.load(tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg["metadata"]["conversion"]["from"] == "saev"
    assert cfg["metadata"]["hook_name"] == "blocks.-2.resid_post"
    with torch.no_grad():
        assert torch.allclose(loaded(x), convert_saev(tmp_path / "sae.pt")(x), atol=1e-6)
    assert visae(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "o2")]) == 2
    assert "no file at" in capsys.readouterr().err
