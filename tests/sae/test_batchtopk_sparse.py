"""BatchTopK and Matryoshka-BatchTopK train through the sparse path (pre-activations without autograd, batch-level
selection by threshold, sparse encoder backward, embedding-bag decoder, prefix groups of one code); every loss part,
gradient, statistic and threshold matches a straightforward dense float64 implementation, with ties too."""

import pytest
import torch

from visae.sae import BatchTopKSAE, SAEConfig, TrainState, create_sae
from visae.sae.base import sum_parts
from visae.sae.kernels import batch_select
from visae.sae.kernels.batch_select import batch_topk_indices
from visae.sae.kernels.prefix_errors import prefix_errors

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["batchtopk", "matryoshka_batchtopk"]
D_IN, D_SAE, K, BATCH = 12, 96, 4, 64
WIDTHS = [8, 20, 48, D_SAE]


# ---- the dense float64 reference --------------------------------------------------------------------------------


def reference_selection(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the k * batch largest entries of relu(pre); ties go to the lower flat index (a stable sort)."""
    acts = pre.detach().relu().reshape(-1)
    return torch.sort(acts, descending=True, stable=True).indices[: k * pre.shape[0]]


def dense_fvu(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    return (recon - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum()


def dense_reference(sae: BatchTopKSAE, x: torch.Tensor, dead: torch.Tensor | None, widths: list[int] | None):
    """(loss parts, latents z [batch, d_sae]) by dense autograd: every product a [batch, d_sae] matmul."""
    cfg = sae.cfg
    target = x * sae.input_scale
    pre = ((target - sae.b_dec) if cfg.apply_b_dec_to_input else target) @ sae.W_enc + sae.b_enc
    keep = torch.zeros(pre.numel(), dtype=torch.bool)
    keep[reference_selection(pre, cfg.k)] = True
    z = pre.relu() * keep.view_as(pre)
    parts = {}
    if widths is None:
        recon = z @ sae.W_dec + sae.b_dec
        parts["fvu"] = dense_fvu(target, recon)
    else:
        for width in widths:
            recon = z[:, :width] @ sae.W_dec[:width] + sae.b_dec
            parts[f"fvu_{width}"] = dense_fvu(target, recon)
    if dead is not None:
        dead_pre = pre.masked_fill(~dead, float("-inf"))
        k_aux = min(cfg.k_aux, cfg.d_sae)
        top = dead_pre.topk(k_aux, dim=-1)
        values = top.values.masked_fill(torch.isinf(top.values.detach()), 0.0)  # live latents picked: nothing
        straight_through = values + (values.relu() - values).detach()  # ReLU forward, identity backward
        aux = torch.zeros_like(pre).scatter(1, top.indices, straight_through) @ sae.W_dec
        residual = (target - recon).detach()
        with torch.no_grad():  # an overshoot along the residual is scaled back to it
            factor = float((residual * aux).sum() / aux.pow(2).sum())
        factor = factor if 0 < factor < 1 else 1.0
        scale = min(float(dead.sum()) / k_aux, 1.0)
        parts["auxk"] = cfg.aux_coeff * scale * dense_fvu(residual, aux * factor)
    return parts, z


def make_sae(arch: str, **kw) -> BatchTopKSAE:
    if arch == "matryoshka_batchtopk":
        kw.setdefault("matryoshka_widths", WIDTHS)
    sae = create_sae(SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=K, k_aux=16, dtype="float64", **kw))
    assert isinstance(sae, BatchTopKSAE)
    return sae


def grads_of(sae: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad()
    loss.backward()
    grads = {}
    for name, p in sae.named_parameters():
        assert p.grad is not None, name
        grads[name] = p.grad.clone()
    return grads


def assert_matches_dense(sae: BatchTopKSAE, x: torch.Tensor, dead: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The sparse training_losses against the dense reference: parts, total, gradients, x_hat, l0, fired."""
    widths = sae.cfg.prefix_widths() if sae.architecture == "matryoshka_batchtopk" else None
    ref_parts, z = dense_reference(sae, x, dead, widths)
    ref_grads = grads_of(sae, sum_parts(ref_parts))
    out = sae.training_losses(x, TrainState(1.0, dead, 0))
    grads = grads_of(sae, out.total)
    assert out.parts.keys() == ref_parts.keys()
    for name, value in ref_parts.items():
        torch.testing.assert_close(out.parts[name], value, msg=name)
    torch.testing.assert_close(out.total, sum_parts(ref_parts))
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)
        assert grad.abs().sum() > 0, name  # every gradient is exercised
    with torch.no_grad():
        torch.testing.assert_close(out.x_hat, (z @ sae.W_dec + sae.b_dec) / sae.input_scale)
    assert float(out.l0) == (z > 0).sum().item() / x.shape[0]
    assert torch.equal(out.fired, (z > 0).any(0))
    return ref_parts


def dyadic(shape: tuple[int, ...], scale: int, generator: torch.Generator) -> torch.Tensor:
    """Small multiples of 1/scale: sums of their products are exact in float64, so equal sums tie exactly."""
    return torch.randint(-1, 2, shape, generator=generator).to(torch.float64) / scale


# ---- training_losses against the reference ----------------------------------------------------------------------


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_sparse_step_matches_dense_autograd_with_auxk(arch, apply_b_dec):
    torch.manual_seed(0)
    sae = make_sae(arch, apply_b_dec_to_input=apply_b_dec)
    x = torch.randn(BATCH, D_IN, dtype=torch.float64) * 3 + 1
    sae.init_from_data(x)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
    dead = torch.rand(D_SAE) < 0.3
    parts = assert_matches_dense(sae, x, dead)
    assert parts["auxk"] > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_ties_at_the_threshold_keep_exactly_k_times_batch_like_topk(arch):
    """Exactly representable (dyadic) weights and inputs make many pre-activations equal, the k*batch-th largest
    among them. Dead latents have continuous encoder columns, so AuxK's own per-row selection has no ties."""
    g = torch.Generator().manual_seed(1)
    sae = make_sae(arch)
    x = dyadic((BATCH, D_IN), 1, g)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=g)[:20]] = True
    with torch.no_grad():
        sae.input_scale.fill_(1.0)
        sae.b_dec.copy_(dyadic((D_IN,), 2, g))
        sae.b_enc.copy_(dyadic((D_SAE,), 4, g))
        sae.W_enc.copy_(dyadic((D_IN, D_SAE), 2, g))
        sae.W_enc[:, dead] = torch.randn(D_IN, int(dead.sum()), generator=g, dtype=torch.float64) / 8
        pre = sae.pre_acts(x)
    count = K * BATCH
    kth = pre.relu().reshape(-1).sort(descending=True).values[count - 1]
    assert kth > 0 and int((pre > kth).sum()) < count < int((pre >= kth).sum())  # the boundary is a tie
    kept = batch_topk_indices(pre, count)
    # the same set as the stable reference: the count, and which of the tied entries (the first ones)
    assert torch.equal(kept, reference_selection(pre, K).sort().values)
    assert kept.numel() == count
    assert_matches_dense(sae, x, dead)


def mostly_negative(arch: str):
    """An SAE whose encoder bias leaves fewer positive pre-activations than k * batch: (sae, x, pre)."""
    sae = make_sae(arch)
    x = torch.randn(BATCH, D_IN, dtype=torch.float64)
    sae.init_from_data(x)
    with torch.no_grad():
        sae.b_enc.fill_(-2.5)
        pre = sae.pre_acts(x)
    return sae, x, pre


@pytest.mark.parametrize("arch", ARCHS)
def test_fewer_positive_pre_activations_than_k_times_batch(arch):
    """The dense rule then keeps ReLU zeros; the sparse code keeps only the positive entries: same losses."""
    torch.manual_seed(2)
    sae, x, pre = mostly_negative(arch)
    assert 0 < int((pre > 0).sum()) < K * BATCH
    assert_matches_dense(sae, x, torch.rand(D_SAE) < 0.5)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_off_cpu_selection_keeping_non_positive_entries_gives_the_same_step(arch, monkeypatch):
    """Off the CPU one torch.topk selects (`topk_flat_indices`): its code keeps ReLU zeros, which change nothing."""
    import visae.sae.batchtopk

    monkeypatch.setattr(visae.sae.batchtopk, "batch_topk_indices", batch_select.topk_flat_indices)
    torch.manual_seed(7)
    sae, x, pre = mostly_negative(arch)
    assert (pre.reshape(-1)[batch_select.topk_flat_indices(pre, K * BATCH)] < 0).any()
    sae.train()
    assert_matches_dense(sae, x, torch.rand(D_SAE) < 0.5)
    assert float(sae.threshold) == pytest.approx(smallest_kept(sae, x), rel=1e-12)


# ---- the inference threshold -------------------------------------------------------------------------------------


def smallest_kept(sae: BatchTopKSAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        pre = sae.pre_acts(x)
        values = pre.reshape(-1)[reference_selection(pre, sae.cfg.k)].relu()
    return float(values[values > 0].min())


@pytest.mark.parametrize("arch", ARCHS)
def test_threshold_ema_and_calibration_follow_the_smallest_kept_activation(arch):
    torch.manual_seed(3)
    sae = make_sae(arch, threshold_momentum=0.9)
    x1, x2 = torch.randn(BATCH, D_IN, dtype=torch.float64), torch.randn(BATCH, D_IN, dtype=torch.float64) + 0.5
    sae.init_from_data(x1)
    sae.train()
    sae.training_losses(x1, TrainState())
    first = smallest_kept(sae, x1)
    assert float(sae.threshold) == pytest.approx(first, rel=1e-12)  # the first batch sets it
    sae.training_losses(x2, TrainState())
    assert float(sae.threshold) == pytest.approx(0.9 * first + 0.1 * smallest_kept(sae, x2), rel=1e-12)
    sae.eval()
    sae.training_losses(x1 * 2, TrainState())  # not in training: unchanged
    assert float(sae.threshold) == pytest.approx(0.9 * first + 0.1 * smallest_kept(sae, x2), rel=1e-12)
    sae.calibrate([x1, x2, x1 * 2])
    expected = (first + smallest_kept(sae, x2) + smallest_kept(sae, x1 * 2)) / 3
    assert float(sae.threshold) == pytest.approx(expected, rel=1e-12)


# ---- the selection kernel ---------------------------------------------------------------------------------------


def check_selection(pre: torch.Tensor, k: int) -> torch.Tensor:
    """batch_topk_indices(pre, k * batch) against the reference: the positive part of its selection, ascending."""
    kept = batch_topk_indices(pre, k * pre.shape[0])
    expected = reference_selection(pre, k)
    expected = expected[pre.reshape(-1)[expected] > 0].sort().values  # the positive part, ascending
    assert torch.equal(kept, expected)
    return kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selection_on_a_batch_larger_than_the_sample(dtype):
    """4096 x 96 > SAMPLE entries: the threshold comes from a strided sample (bfloat16: ties everywhere)."""
    torch.manual_seed(4)
    pre = (torch.randn(4096, 96) + torch.randn(96)).to(dtype)
    assert pre.numel() > batch_select.SAMPLE
    kept = check_selection(pre, 3)
    assert kept.numel() == 3 * 4096


def test_selection_lowers_a_threshold_estimated_too_high(monkeypatch):
    """The sampled entries are the largest: the threshold estimated from them keeps too few, a lower one is tried."""
    monkeypatch.setattr(batch_select, "SAMPLE", 64)
    torch.manual_seed(5)
    pre = torch.rand(100, 40)
    sampled = batch_select._strided_sample(torch.arange(pre.numel(), dtype=torch.float64), 40).long()
    pre.view(-1)[sampled] += 10.0
    thresholds = []
    original = batch_select._at_least
    monkeypatch.setattr(batch_select, "_at_least", lambda flat, t: thresholds.append(t) or original(flat, t))
    check_selection(pre, 5)
    assert len(thresholds) > 1 and thresholds[0] > 10 > thresholds[-1]


def test_selection_edge_cases():
    torch.manual_seed(6)
    check_selection(-torch.rand(50, 30), 2)  # nothing positive: nothing kept
    pre = torch.randn(50, 30)
    assert check_selection(pre, 30).numel() == int((pre > 0).sum())  # k = d_sae: every positive entry
    tied = torch.ones(20, 30)
    assert torch.equal(check_selection(tied, 4), torch.arange(80))  # all tied: the first ones


def test_prefix_errors_gradients():
    """Both outputs (the squared errors and the last error) and their gradients, against autograd's running sum."""
    torch.manual_seed(8)
    offset = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    groups = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(prefix_errors, (offset, groups))
    squared, last = prefix_errors(offset, groups)
    errors = offset.unsqueeze(1) + groups.cumsum(1)
    torch.testing.assert_close(squared, errors.pow(2).sum((0, 2)))
    torch.testing.assert_close(last, errors[:, -1])
