"""Transcoders (sae/transcoder.py): batches split into input and output hooks, training losses on the output
hook, SAELens's transcoder format both ways (interop with sae_lens), and the folders refused on load."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from visae.sae import SAE, JumpReLUSAE, SAEConfig, SkipTranscoder, TrainState, create_sae
from visae.sae.file_format import CFG_FILE, WEIGHTS_FILE

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(120)]

D_IN, D_OUT, D_SAE = 16, 12, 48
TRAINABLE = ["topk_transcoder", "topk_skip_transcoder", "batchtopk_transcoder", "batchtopk_skip_transcoder",
             "jumprelu_transcoder", "jumprelu_skip_transcoder", "transcoder", "skip_transcoder"]
# The architecture SAELens reads in each visae transcoder's cfg.json (BatchTopK is saved as JumpReLU).
SAVED_AS = {"batchtopk_transcoder": "jumprelu_transcoder", "batchtopk_skip_transcoder": "jumprelu_skip_transcoder"}


def batch(n: int = 256, seed: int = 0) -> torch.Tensor:
    """Input hook then output hook side by side, on different scales (as mlp_in and mlp_out are)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g) * 4 + 1
    y = torch.tanh(x @ torch.randn(D_IN, D_OUT, generator=g)) * 0.3 - 0.1
    return torch.cat([x, y], dim=1)


def trained_like(arch: str) -> SAE:
    """A transcoder with non-trivial weights, scales, skip term and threshold, as after training."""
    torch.manual_seed(0)
    t = create_sae(SAEConfig(architecture=arch, d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, k=5, apply_b_dec_to_input=False,
                             metadata={"hook_name": "blocks.2.mlp_in", "hook_name_out": "blocks.2.mlp_out"}))
    t.init_from_data(batch())
    t.calibrate([batch(seed=1)])  # BatchTopK's threshold, from other tokens than those compared below
    with torch.no_grad():
        t.b_enc.normal_(0, 0.5)
        if isinstance(t, SkipTranscoder):
            t.W_skip.normal_(0, 0.3)
        if isinstance(t, JumpReLUSAE):
            t.log_threshold.copy_(torch.rand(D_SAE).log())
    return t.eval()


@pytest.mark.parametrize("arch", TRAINABLE)
def test_training_reads_the_input_and_reconstructs_the_output_hook(arch):
    t = trained_like(arch).train()
    data = batch()
    out = t.training_losses(data, TrainState())
    out.total.backward()
    assert out.x_hat.shape == (256, D_OUT) and out.total.isfinite()
    assert t.W_enc.grad is not None and t.W_dec.grad is not None
    assert t.split_batch(data)[0].shape == (256, D_IN)
    with pytest.raises(ValueError, match=r"input hook then its output hook side by side \(16 \+ 12"):
        t.training_losses(data[:, :D_IN], TrainState())


def test_scales_and_centring_come_from_the_data():
    t = create_sae(SAEConfig(architecture="topk_skip_transcoder", d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, k=5,
                             apply_b_dec_to_input=False))
    assert isinstance(t, SkipTranscoder)
    data = batch()
    t.init_from_data(data, mean_norms=[2.0, 0.5])
    assert float(t.input_scale) == pytest.approx(4 / 2.0) and float(t.target_scale) == pytest.approx(12**0.5 / 0.5)
    torch.testing.assert_close(t.b_dec, (data[:, D_IN:] * t.target_scale).mean(0))
    pre = t.pre_acts(data[:, :D_IN])
    assert pre.mean(0).abs().max() < 1e-4  # b_enc centres the first pre-activations
    assert not t.W_skip.any()  # the skip term starts at zero


@pytest.mark.parametrize("arch", TRAINABLE)
def test_visae_folder_reloads_with_identical_outputs(arch, tmp_path):
    t = trained_like(arch)
    t.save(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / CFG_FILE).read_text())
    assert cfg["architecture"] == SAVED_AS.get(arch, arch)
    assert (cfg["d_in"], cfg["d_out"], cfg["apply_b_dec_to_input"]) == (D_IN, D_OUT, False)
    loaded = SAE.load(tmp_path / "t")
    x = batch(seed=2)[:, :D_IN]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), t(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.encode(x), t.encode(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", TRAINABLE)
def test_visae_folder_loads_in_saelens_with_identical_outputs(arch, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from visae.sae.sae_lens_transcoders import register

    register()  # SAELens has no TopK transcoder; the two classes it needs for visae's
    t = trained_like(arch)
    t.save(tmp_path / "t")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "t")
    assert theirs.cfg.architecture() == SAVED_AS.get(arch, arch)
    assert theirs.cfg.metadata.hook_name_out == "blocks.2.mlp_out"
    x = batch(seed=2)[:, :D_IN]
    with torch.no_grad():
        z = t.encode(x)
        assert int((z > 0).sum()) > 0
        torch.testing.assert_close(theirs.encode(x), z, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs(x), t(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"])
def test_saelens_transcoder_folder_loads_in_visae_with_identical_outputs(arch, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    cls, cfg_cls = sae_lens.registry.get_sae_class(arch)
    torch.manual_seed(1)
    theirs = cls(cfg_cls(d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        if "jumprelu" in arch:
            theirs.threshold.uniform_(0, 0.5)
    theirs.save_model(tmp_path / "t")
    ours = SAE.load(tmp_path / "t")
    assert ours.architecture == arch
    x = batch(seed=3)[:, :D_IN]
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_skip_transcoder_folder_without_w_skip_is_refused(tmp_path):
    trained_like("topk_skip_transcoder").save(tmp_path / "t")
    weights = tmp_path / "t" / WEIGHTS_FILE
    tensors = load_file(weights)
    del tensors["W_skip"]
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="lacks tensor.* W_skip needed by a topk_skip_transcoder"):
        SAE.load(tmp_path / "t")


def test_transcoder_folder_without_d_out_and_b_dec_on_the_input_are_refused(tmp_path):
    trained_like("topk_transcoder").save(tmp_path / "t")
    cfg_file = tmp_path / "t" / CFG_FILE
    cfg = json.loads(cfg_file.read_text())
    del cfg["d_out"]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="needs `d_out`, the width of the hook it predicts"):
        SAE.load(tmp_path / "t")
    with pytest.raises(ValueError, match="set apply_b_dec_to_input=False"):
        create_sae(SAEConfig(architecture="topk_transcoder", d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, k=5))
