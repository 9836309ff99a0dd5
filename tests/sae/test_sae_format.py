"""The SAELens-compatible file format: interop with sae_lens both ways, atomic writes, bad files refused."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from visae.sae import SAE, BatchTopKSAE, JumpReLUSAE, SAEConfig, create_sae
from visae.sae.file_format import CFG_FILE, SPARSITY_FILE, WEIGHTS_FILE, read_sparsity

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]




def trained_like(arch: str) -> SAE:
    """An SAE with non-trivial weights, input scale and threshold, as after training."""
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture=arch, d_in=16, d_sae=48, k=5,
                               metadata={"hook_name": "blocks.3.resid_post"}))
    sae.init_from_data(torch.randn(256, 16) * 4 + 1)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
        if arch == "jumprelu":
            assert isinstance(sae, JumpReLUSAE)
            sae.log_threshold.copy_(torch.rand(48).log())
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            assert isinstance(sae, BatchTopKSAE)
            sae.threshold.fill_(0.3)
    return sae.eval()


@pytest.fixture
def x():
    return torch.randn(32, 16) * 4 + 1


@pytest.mark.parametrize("arch", ARCHS)
def test_visae_folder_loads_in_saelens_with_identical_outputs(arch, x, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = trained_like(arch)
    sae.save(tmp_path / "s")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "s")
    expected = {"batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}.get(arch, arch)
    assert theirs.cfg.architecture() == expected
    assert theirs.cfg.metadata.hook_name == "blocks.3.resid_post"
    with torch.no_grad():
        z = sae.encode(x)
        assert int((z > 0).sum()) > 0
        assert torch.allclose(theirs.encode(x), z, atol=1e-5)
        assert torch.allclose(theirs.decode(z), sae.decode(z), atol=1e-5)
        assert torch.allclose(theirs(x), sae(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_saelens_folder_loads_in_visae_with_identical_outputs(arch, x, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    cls, cfg_cls = sae_lens.registry.get_sae_class(arch)
    kw = {"k": 5} if arch == "topk" else {}
    torch.manual_seed(1)
    theirs = cls(cfg_cls(d_in=16, d_sae=48, **kw))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        if arch == "jumprelu":
            theirs.threshold.uniform_(0, 0.5)
    theirs.save_model(tmp_path / "s")
    ours = SAE.load(tmp_path / "s")
    assert ours.architecture == arch
    with torch.no_grad():
        z = theirs.encode(x)
        assert torch.allclose(ours.encode(x), z, atol=1e-5)
        assert torch.allclose(ours.decode(z), theirs.decode(z), atol=1e-5)


def test_saelens_topk_with_decoder_norm_rescaling_is_folded(x, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(2)
    theirs = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=16, d_sae=48, k=5, rescale_acts_by_decoder_norm=True))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
    theirs.save_model(tmp_path / "s")
    ours = SAE.load(tmp_path / "s")
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-4)


def test_cfg_keys_match_saelens_names(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    trained_like("topk").save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / CFG_FILE).read_text())
    _, cfg_cls = sae_lens.registry.get_sae_class("topk")
    field_names = set(cfg_cls.__dataclass_fields__)
    assert {"d_in", "d_sae", "dtype", "apply_b_dec_to_input", "normalize_activations", "k"} <= field_names
    assert set(cfg) - {"architecture", "metadata"} <= field_names
    assert cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["input_scale_folded"] != 1.0


def test_save_writes_sparsity_and_weights_exactly(tmp_path):
    sae = trained_like("topk")
    sparsity = torch.linspace(-10, 0, 48)
    sae.save(tmp_path / "s", sparsity=sparsity)
    saved_sparsity = read_sparsity(tmp_path / "s")
    assert saved_sparsity is not None and torch.equal(saved_sparsity, sparsity)
    assert torch.equal(load_file(tmp_path / "s" / WEIGHTS_FILE)["b_enc"], sae.b_enc.detach())
    assert (tmp_path / "s" / SPARSITY_FILE).is_file()


def test_save_is_atomic_and_replaces_previous_folder(tmp_path, monkeypatch):
    sae = trained_like("topk")
    sae.save(tmp_path / "s")
    before = (tmp_path / "s" / WEIGHTS_FILE).read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("visae.sae.file_format.save", crash)
    with pytest.raises(OSError, match="No space left"):
        trained_like("standard").save(tmp_path / "s")
    assert (tmp_path / "s" / WEIGHTS_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    monkeypatch.undo()
    trained_like("standard").save(tmp_path / "s")
    assert SAE.load(tmp_path / "s").architecture == "standard"


@pytest.fixture
def saved(tmp_path):
    trained_like("jumprelu").save(tmp_path / "s")
    return tmp_path / "s"


def edit_cfg(folder, **changes):
    cfg = json.loads((folder / CFG_FILE).read_text())
    cfg.update(changes)
    (folder / CFG_FILE).write_text(json.dumps(cfg))


def edit_weights(folder, fn):
    tensors = load_file(folder / WEIGHTS_FILE)
    fn(tensors)
    save_file(tensors, folder / WEIGHTS_FILE)


def test_refuses_shapes_disagreeing_with_cfg(saved):
    edit_cfg(saved, d_sae=40)
    with pytest.raises(ValueError, match=r"W_enc has shape \[16, 48\] but cfg.json .* needs \[16, 40\]"):
        SAE.load(saved)


def test_refuses_unknown_architecture(saved):
    edit_cfg(saved, architecture="gated")
    with pytest.raises(ValueError, match="unknown architecture 'gated'"):
        SAE.load(saved)


def test_refuses_missing_key(saved):
    edit_weights(saved, lambda t: t.pop("threshold"))
    with pytest.raises(ValueError, match="lacks tensor.*threshold"):
        SAE.load(saved)


def test_refuses_nan_weight(saved):
    def poison(t):
        t["W_dec"][3, 2] = float("nan")

    edit_weights(saved, poison)
    with pytest.raises(ValueError, match="W_dec holds NaN"):
        SAE.load(saved)


def test_refuses_pickle_in_folder(saved):
    torch.save({"W_enc": torch.zeros(2)}, saved / "extra.pt")
    with pytest.raises(ValueError, match="refuses pickles"):
        SAE.load(saved)


def test_refuses_pickle_disguised_as_safetensors(saved):
    (saved / WEIGHTS_FILE).write_bytes(pickle.dumps({"W_enc": [1, 2]}, protocol=4))
    with pytest.raises(ValueError, match="pickle"):
        SAE.load(saved)
    torch.save({"W_enc": torch.zeros(2)}, saved / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="pickle"):
        SAE.load(saved)


def test_refuses_missing_files_and_unfolded_normalisation(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no SAE folder"):
        SAE.load(tmp_path / "absent")
    edit_cfg(saved, normalize_activations="expected_average_only_in")
    with pytest.raises(ValueError, match="scaling factor"):
        SAE.load(saved)
    (saved / CFG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="has no cfg.json"):
        SAE.load(saved)
