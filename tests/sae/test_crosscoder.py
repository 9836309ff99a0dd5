"""Crosscoders (sae/crosscoder.py): one dictionary over several hooks of different scales and widths, the
per-hook loss and scales, the optional decoder-norm penalty, the documented file format, and the hook profile."""

import json

import pytest
import torch
from safetensors.torch import load_file

from visae.sae import SAE, CrossCoder, SAEConfig, TrainState, create_sae
from visae.sae.crosscoder import PROFILE_FILE, hook_profile
from visae.sae.file_format import CFG_FILE, WEIGHTS_FILE
from visae.sae.topk import fraction_unexplained

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(60)]

DIMS, D_SAE, K = [8, 12, 8], 64, 4


def batch(n: int = 256, seed: int = 0) -> torch.Tensor:
    """Three hooks side by side, on very different scales and offsets."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n, d, generator=g) * scale + offset
                      for d, scale, offset in zip(DIMS, (1.0, 10.0, 0.1), (1.0, -5.0, 0.0))], dim=1)


def crosscoder(l1: float = 0.0) -> CrossCoder:
    torch.manual_seed(0)
    cc = create_sae(SAEConfig(architecture="crosscoder", d_in=sum(DIMS), hook_dims=DIMS, d_sae=D_SAE, k=K,
                              decoder_norm_l1_coeff=l1, metadata={"hook_names": ["a", "b", "c"]}))
    assert isinstance(cc, CrossCoder)
    cc.init_from_data(batch())
    with torch.no_grad():
        cc.b_enc.normal_(0, 0.3)
    return cc


def test_each_hook_is_scaled_to_its_own_norm():
    cc, x = crosscoder(), batch()
    scaled = cc.scale_input(x)
    for where, d in zip(cc.hook_slices(), DIMS):
        assert float(scaled[:, where].norm(dim=1).mean()) == pytest.approx(d**0.5, rel=1e-4)


def test_loss_is_the_mean_of_the_hooks_fvus_plus_the_optional_decoder_norm_penalty():
    cc, x = crosscoder(l1=0.5), batch()
    out = cc.training_losses(x, TrainState(sparsity_scale=0.5))
    target, recon = cc.scale_input(x), out.x_hat * cc.input_scale
    per_hook = [fraction_unexplained(target[:, w], recon[:, w]) for w in cc.hook_slices()]
    assert out.parts["fvu"].item() == pytest.approx(torch.stack(per_hook).mean().item(), rel=1e-4)
    z = cc.encode(x)  # the dense code of the same TopK
    summed = sum(cc.W_dec[:, w].norm(dim=1) for w in cc.hook_slices())
    assert out.parts["l1"].item() == pytest.approx(0.5 * 0.5 * (z * summed).sum(1).mean().item(), rel=1e-4)
    assert "l1" not in crosscoder().training_losses(x, TrainState()).parts
    out.total.backward()
    assert cc.W_enc.grad is not None and cc.W_enc.grad[:8].abs().sum() > 0


def test_saved_file_holds_one_encoder_and_decoder_per_hook_and_computes_the_documented_formula(tmp_path):
    """The folder, read with nothing but safetensors: z = TopK(sum_l W_enc.l x^l + b_enc), x_hat^l = W_dec.l z + b_dec.l
    gives what the crosscoder gives, and what visae loads back."""
    cc = crosscoder().eval()
    cc.save(tmp_path / "cc")
    cfg = json.loads((tmp_path / "cc" / CFG_FILE).read_text())
    assert (cfg["architecture"], cfg["hook_dims"], cfg["d_in"], cfg["k"]) == ("crosscoder", DIMS, 28, K)
    assert cfg["apply_b_dec_to_input"] is False
    w = load_file(tmp_path / "cc" / WEIGHTS_FILE)
    assert {k: tuple(v.shape) for k, v in w.items()} == {
        "b_enc": (D_SAE,), **{f"W_enc.{i}": (d, D_SAE) for i, d in enumerate(DIMS)},
        **{f"W_dec.{i}": (D_SAE, d) for i, d in enumerate(DIMS)}, **{f"b_dec.{i}": (d,) for i, d in enumerate(DIMS)}}
    x = batch(seed=1)
    hooks = x.split(DIMS, dim=1)
    pre = sum(h @ w[f"W_enc.{i}"] for i, h in enumerate(hooks)) + w["b_enc"]
    top = pre.topk(K, dim=1)
    z = torch.zeros_like(pre).scatter_(1, top.indices, top.values.relu())
    by_formula = torch.cat([z @ w[f"W_dec.{i}"] + w[f"b_dec.{i}"] for i in range(len(DIMS))], dim=1)
    loaded = SAE.load(tmp_path / "cc")
    with torch.no_grad():
        torch.testing.assert_close(by_formula, cc(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loaded(x), cc(x), atol=1e-4, rtol=1e-4)


def test_hook_profile_is_written_and_survives_a_reload(tmp_path):
    cc = crosscoder()
    with torch.no_grad():  # latents 0-9 write only to hook 0, 10-14 only to hook 2, the rest everywhere
        cc.W_dec[:10, 8:] = 0
        cc.W_dec[10:15, :20] = 0
    cc.save(tmp_path / "cc", sparsity=torch.where(torch.arange(D_SAE) < 60, -1.0, -10.0))
    profile = json.loads((tmp_path / "cc" / CFG_FILE).read_text())["metadata"]["hook_profile"]
    assert profile["n_latents"] == 60  # the 4 latents that never fired are left out
    assert profile["exclusive_fraction"] == {"a": 10 / 60, "b": 0.0, "c": 5 / 60}
    assert profile["shared_fraction"] == pytest.approx(45 / 60)
    norms = load_file(tmp_path / "cc" / PROFILE_FILE)["decoder_norms"]
    torch.testing.assert_close(norms, cc.decoder_norms())
    assert norms.shape == (D_SAE, 3) and bool((norms[:10, 1:] == 0).all())
    reloaded = SAE.load(tmp_path / "cc")
    assert isinstance(reloaded, CrossCoder)
    torch.testing.assert_close(reloaded.decoder_norms(), norms, atol=1e-5, rtol=1e-5)  # the folded scales undone
    reloaded.save(tmp_path / "again")
    torch.testing.assert_close(load_file(tmp_path / "again" / PROFILE_FILE)["decoder_norms"], norms, atol=1e-5,
                               rtol=1e-5)


def test_hook_profile_counts_exclusive_and_shared_latents():
    norms = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.5, 0.5], [0.0, 2.0]])
    profile = hook_profile(norms, ["dino", "clip"])
    assert profile["exclusive_fraction"] == {"dino": 0.5, "clip": 0.25} and profile["shared_fraction"] == 0.25


def test_crosscoder_without_hook_dims_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs hook_dims"):
        create_sae(SAEConfig(architecture="crosscoder", d_in=28, d_sae=D_SAE, k=K))
    with pytest.raises(ValueError, match="must sum to d_in=30"):
        SAEConfig(architecture="crosscoder", d_in=30, hook_dims=DIMS, d_sae=D_SAE, k=K)
    crosscoder().save(tmp_path / "cc")
    cfg_file = tmp_path / "cc" / CFG_FILE
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "hook_dims": [8, 12]}))
    with pytest.raises(ValueError, match="needs `hook_dims`, the width of each hook, summing to d_in=28"):
        SAE.load(tmp_path / "cc")
