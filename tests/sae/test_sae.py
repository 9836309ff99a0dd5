"""Architectures, sparse decoding, initialisation, decoder-norm hooks and input-scale folding."""

import math

import pytest
import torch

from visae.sae import SAE, BatchTopKSAE, JumpReLUSAE, SAEConfig, TopKSAE, TrainState, create_sae
from visae.sae.base import geometric_median
from visae.sae.kernels.sparse_decode import decode_topk, decode_triples
from visae.sae.topk import auxk_loss

pytestmark = pytest.mark.usefixtures("one_thread")



ARCHS = ["standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]


def small_cfg(arch: str, **kw) -> SAEConfig:
    if arch == "standard":
        kw.setdefault("l1_coeff", 0.3)
    return SAEConfig(architecture=arch, d_in=16, d_sae=64, k=4, **kw)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(24, 16, generator=g)
    codes = torch.rand(512, 24, generator=g) * (torch.rand(512, 24, generator=g) < 0.15)
    return 5.0 * codes @ basis + 2.0


def train(sae: SAE, x: torch.Tensor, steps: int = 150, lr: float = 1e-2) -> None:
    sae.init_from_data(x)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    dead = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for _ in range(steps):
        out = sae.training_losses(x, TrainState(dead_mask=dead))
        opt.zero_grad()
        out.total.backward()
        sae.after_backward()
        opt.step()
        sae.after_step()
    sae.eval()


def fvu(x, x_hat):
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


@pytest.mark.parametrize("arch", ARCHS)
def test_training_reduces_reconstruction_error_and_parts_sum_to_total(arch, data):
    torch.manual_seed(0)
    sae = create_sae(small_cfg(arch))
    sae.init_from_data(data)
    before = fvu(data, sae(data).detach())
    train(sae, data)
    with torch.no_grad():
        after = fvu(data, sae(data))
        out = sae.training_losses(data, TrainState())
    assert after < 0.5 * before
    assert torch.allclose(out.total, sum(out.parts.values(), torch.tensor(0.0)))
    assert out.fired.dtype == torch.bool and out.fired.shape == (64,)
    assert out.x_hat.shape == data.shape
    assert fvu(data, out.x_hat) < 0.5 * before


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka_batchtopk"])
def test_topk_family_codes_have_about_k_active(arch, data):
    torch.manual_seed(0)
    sae = create_sae(small_cfg(arch))
    sae.init_from_data(data)
    out = sae.training_losses(data, TrainState())
    assert float(out.l0) == pytest.approx(4.0, abs=0.01)
    assert int(out.fired.sum()) > 4


def test_topk_encode_keeps_k_latents_and_sparse_forward_matches_dense(data):
    torch.manual_seed(0)
    sae = create_sae(small_cfg("topk"))
    assert isinstance(sae, TopKSAE)
    sae.init_from_data(data)
    z = sae.encode(data)
    assert int((z != 0).sum(-1).max()) <= 4
    values, indices = sae.encode_sparse(data)
    assert torch.allclose(sae.decode_sparse(values, indices), sae.decode(z), atol=1e-5)
    assert torch.allclose(sae(data), sae.decode(z), atol=1e-5)


def test_sparse_decode_matches_dense_values_and_gradients():
    torch.manual_seed(0)
    batch, n, d, k = 37, 200, 24, 7
    W = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    values = torch.rand(batch, k, dtype=torch.float64, requires_grad=True)
    indices = torch.stack([torch.randperm(n)[:k] for _ in range(batch)])
    grad = torch.randn(batch, d, dtype=torch.float64)

    out = decode_topk(values, indices, W)
    out.backward(grad)
    assert values.grad is not None and W.grad is not None
    sparse_grads = values.grad.clone(), W.grad.clone()
    values.grad = W.grad = None

    dense = torch.zeros(batch, n, dtype=torch.float64).scatter(1, indices, values) @ W
    dense.backward(grad)
    assert values.grad is not None and W.grad is not None
    assert torch.allclose(out, dense, atol=1e-10)
    assert torch.allclose(sparse_grads[0], values.grad, atol=1e-10)
    assert torch.allclose(sparse_grads[1], W.grad, atol=1e-10)
    unused = torch.ones(n, dtype=torch.bool)
    unused[indices.reshape(-1)] = False
    assert bool((sparse_grads[1][unused] == 0).all())


def test_sparse_decode_triples_with_empty_rows_and_gradcheck():
    torch.manual_seed(0)
    W = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([0, 0, 2, 2, 2, 4])
    latents = torch.tensor([1, 7, 0, 7, 9, 3])
    values = torch.rand(6, dtype=torch.float64, requires_grad=True)
    out = decode_triples(values, rows, latents, W, 5)
    assert bool((out[1] == 0).all()) and bool((out[3] == 0).all())
    assert torch.autograd.gradcheck(lambda v, w: decode_triples(v, rows, latents, w, 5), (values, W))


def test_init_sets_scale_bias_and_tied_encoder(data):
    sae = create_sae(small_cfg("topk"))
    assert torch.allclose(sae.W_enc, sae.W_dec.T)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64))
    sae.init_from_data(data)
    scaled = data * sae.input_scale
    assert float(scaled.norm(dim=1).mean()) == pytest.approx(math.sqrt(16), rel=1e-4)
    assert torch.allclose(sae.b_dec, scaled.mean(0), atol=1e-5)


def test_standard_decoder_rows_start_at_norm_point_one_and_stay_unconstrained(data):
    sae = create_sae(small_cfg("standard"))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.1))
    train(sae, data, steps=20)
    assert not torch.allclose(sae.W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-3)


def test_geometric_median_resists_outliers():
    x = torch.cat([torch.zeros(50, 2), torch.full((5, 2), 1000.0)])
    assert float(geometric_median(x).norm()) < 1.0
    cfg = small_cfg("topk", b_dec_init="geometric_median", normalize_activations="none")
    sae = create_sae(cfg)
    sae.init_from_data(x.repeat(1, 8))
    assert float(sae.b_dec.detach().norm()) < 1.0


def test_after_backward_removes_parallel_gradient_and_after_step_renormalises():
    torch.manual_seed(0)
    sae = create_sae(small_cfg("topk"))
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.after_backward()
    assert float((sae.W_dec.grad * sae.W_dec.detach()).sum(1).abs().max()) < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.after_step()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)


def test_auxk_revives_dead_latents_gradient(data):
    torch.manual_seed(0)
    sae = create_sae(small_cfg("topk", k_aux=8))
    sae.init_from_data(data)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[32:] = True
    out = sae.training_losses(data, TrainState(dead_mask=dead))
    assert out.parts["auxk"].detach() > 0
    out.parts["auxk"].backward()
    grad = sae.W_enc.grad
    assert grad is not None
    assert float(grad[:, 32:].abs().sum()) > 0
    assert float(grad[:, :32].abs().sum()) == 0
    no_dead = sae.training_losses(data, TrainState(dead_mask=torch.zeros(64, dtype=torch.bool)))
    assert float(no_dead.parts["auxk"].detach()) == 0


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_raises_a_latent_negative_on_every_token(data, arch):
    """A dead latent whose pre-activations are below zero on every token still gets AuxK's gradient (the ReLU is
    straight-through), and it is raised when its decoder row points along the residual: with a plain ReLU it would
    stay dead for good (docs/logbook.md, entry 5)."""
    sae = create_sae(small_cfg(arch, k_aux=8))
    sae.init_from_data(data)
    with torch.no_grad():
        sae.b_enc[32] = -1e3
        residual = sae.scale_input(data) - sae.training_losses(data, TrainState()).x_hat * sae.input_scale
        sae.W_dec[32] = residual.sum(0) / residual.sum(0).norm()
    assert float(sae.pre_acts(data)[:, 32].max().detach()) < 0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[32] = True
    sae.training_losses(data, TrainState(dead_mask=dead)).parts["auxk"].backward()
    assert sae.b_enc.grad is not None
    assert float(sae.b_enc.grad[32]) < 0  # gradient descent raises its pre-activations


def test_auxk_scales_an_overshoot_back_to_the_residual():
    """When the dead latents' reconstruction overshoots the residual along its own direction (here 3x), AuxK
    fits it back instead of pushing every selected latent down: no loss, no gradient."""
    sae = create_sae(small_cfg("topk", k_aux=8))
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    with torch.no_grad():
        sae.W_dec[5] = direction
    size = torch.rand(64) + 0.5
    residual = size[:, None] * direction
    dead = torch.zeros(64, dtype=torch.bool)
    dead[5] = True
    dead_pre = torch.full((64, 64), float("-inf"))
    dead_pre[:, 5] = 3 * size
    dead_pre.requires_grad_(True)
    loss = auxk_loss(sae, dead_pre, residual, dead)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert dead_pre.grad is not None
    assert float(dead_pre.grad.abs().max()) < 1e-6  # unscaled, this overshoot's gradient is about 0.1 per value


def test_sparsity_warmup_scales_penalty(data):
    sae = create_sae(small_cfg("standard"))
    sae.init_from_data(data)
    full = sae.training_losses(data, TrainState(sparsity_scale=1.0)).parts["l1"]
    half = sae.training_losses(data, TrainState(sparsity_scale=0.5)).parts["l1"]
    assert float(half.detach()) == pytest.approx(0.5 * float(full.detach()), rel=1e-5)


def test_jumprelu_threshold_gets_gradient_from_l0(data):
    sae = create_sae(small_cfg("jumprelu", l0_coeff=1.0))
    assert isinstance(sae, JumpReLUSAE)
    sae.init_from_data(data)
    out = sae.training_losses(data, TrainState())
    out.parts["l0"].backward()
    assert sae.log_threshold.grad is not None
    assert float(sae.log_threshold.grad.abs().sum()) > 0
    assert sae.W_enc.grad is None or float(sae.W_enc.grad.abs().sum()) == 0


def test_batchtopk_threshold_tracks_training_and_is_used_at_inference(data):
    torch.manual_seed(0)
    sae = create_sae(small_cfg("batchtopk"))
    assert isinstance(sae, BatchTopKSAE)
    assert float(sae.threshold) < 0
    train(sae, data, steps=30)
    assert float(sae.threshold) > 0
    with torch.no_grad():
        l0 = float((sae.encode(data) > 0).sum(-1).float().mean())
    assert 1.0 < l0 < 12.0


@pytest.mark.parametrize("arch", ARCHS)
def test_save_folds_input_scale_and_reloads_identically(arch, data, tmp_path):
    torch.manual_seed(0)
    sae = create_sae(small_cfg(arch))
    train(sae, data, steps=20)
    assert float(sae.input_scale) != pytest.approx(1.0)
    sae.save(tmp_path / "sae")
    loaded = SAE.load(tmp_path / "sae")
    assert float(loaded.input_scale) == 1.0
    with torch.no_grad():
        assert torch.allclose(loaded.encode(data), sae.encode(data), atol=1e-4)
        assert torch.allclose(loaded(data), sae(data), atol=1e-4)


def test_config_from_yaml_with_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("architecture: jumprelu\nd_in: 32\nd_sae: 128\n")
    cfg = SAEConfig.from_yaml(str(tmp_path / "c.yaml"), ["l0_coeff=0.5"])
    assert (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.l0_coeff) == ("jumprelu", 32, 128, 0.5)
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        SAEConfig(architecture="gated")
    with pytest.raises(ValueError, match="matryoshka_widths"):
        SAEConfig(architecture="matryoshka_batchtopk", d_sae=64, matryoshka_widths=[8, 4, 64])


def test_sparse_topk_encoder_gradients_match_dense():
    torch.manual_seed(0)
    from visae.sae.kernels.sparse_code import SparseCode
    from visae.sae.kernels.sparse_encode import gather_pre_acts

    x = torch.randn(11, 6, dtype=torch.float64)
    W = torch.randn(6, 30, dtype=torch.float64, requires_grad=True)
    b = torch.randn(30, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(6, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(11 * 4, dtype=torch.float64)
    with torch.no_grad():
        pre = (x - b_dec) @ W + b
    code = SparseCode.from_topk(pre.topk(4, dim=-1, sorted=False).indices, 30)
    sparse = (gather_pre_acts(x - b_dec.detach(), W, b, pre, code, b_dec).relu() * weights).sum()
    dense = (code.gather((x - b_dec) @ W + b).relu() * weights).sum()
    for got, want in zip(torch.autograd.grad(sparse, (W, b, b_dec)), torch.autograd.grad(dense, (W, b, b_dec))):
        assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("n,k", [(6144, 32), (4096, 64), (1000, 8), (96, 4), (520, 65)])
def test_topk_indices_selects_exactly_the_k_largest(n, k):
    from visae.sae.kernels.topk_select import topk_indices

    torch.manual_seed(n)
    x = torch.randn(300, n)
    x[:5] = x[:5].round()  # many ties
    x[5, : n // 2] = 7.0  # the top k all in a few groups
    got = topk_indices(x, k)
    assert got.shape == (300, k)
    assert bool((got.sort(-1).values.diff(dim=-1) > 0).all()), "indices repeat within a row"
    want = x.topk(k, dim=-1).values
    assert torch.equal(x.gather(1, got).sort(-1, descending=True).values, want)


def test_scratch_reuses_one_buffer_per_thread_and_dtype():
    from visae.sae.kernels.scratch import scratch

    def cpu_scratch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buffer = scratch(shape, dtype, torch.device("cpu"))
        assert buffer is not None  # None only off the CPU or under autocast
        return buffer

    a = cpu_scratch((64, 32), torch.float32)
    b = cpu_scratch((16, 8), torch.float32)
    assert a.data_ptr() == b.data_ptr()
    assert cpu_scratch((16, 8), torch.float64).data_ptr() != a.data_ptr()
    assert cpu_scratch((128, 64), torch.float32).shape == (128, 64)
