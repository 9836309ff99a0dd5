"""The TopK training step's sparse encoder backward gives the dense autograd gradients (with AuxK)."""

import torch

from visae.sae import SAEConfig, TrainState, create_sae
from visae.sae.kernels.sparse_decode import decode_topk
from visae.sae.topk import auxk_loss, fraction_unexplained, mask_live


def dense_reference_loss(sae, x, dead):
    target = sae.scale_input(x)
    pre = sae.pre_acts(x)  # autograd through the dense pre-activations
    values, indices = sae.topk_code(pre)
    recon = decode_topk(values, indices, sae.W_dec) + sae.b_dec
    return fraction_unexplained(target, recon) + auxk_loss(sae, mask_live(pre, dead), target - recon, dead)


def cloned_grads(sae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter's gradient (each must have one)."""
    grads = {}
    for name, p in sae.named_parameters():
        assert p.grad is not None, name
        grads[name] = p.grad.clone()
    return grads


def test_sparse_backward_matches_dense_autograd():
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture="topk", d_in=24, d_sae=96, k=6, k_aux=16, dtype="float64"))
    x = torch.randn(128, 24, dtype=torch.float64) * 3 + 1
    sae.init_from_data(x)
    dead = torch.rand(96) < 0.3

    dense_reference_loss(sae, x, dead).backward()
    expected = cloned_grads(sae)
    sae.zero_grad()
    out = sae.training_losses(x, TrainState(1.0, dead, 0))
    out.total.backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)
    assert expected["W_enc"].abs().sum() > 0 and out.parts["auxk"] > 0


def test_auxk_limited_to_the_dead_count_gives_the_same_loss_and_gradients():
    torch.manual_seed(1)
    sae = create_sae(SAEConfig(architecture="topk", d_in=24, d_sae=96, k=6, k_aux=48, dtype="float64"))
    x = torch.randn(128, 24, dtype=torch.float64)
    sae.init_from_data(x)
    dead = torch.zeros(96, dtype=torch.bool)
    dead[torch.randperm(96)[:5]] = True
    results = []
    for count in (None, 5):
        sae.zero_grad()
        out = sae.training_losses(x, TrainState(1.0, dead, 0, dead_count=count))
        out.total.backward()
        results.append((out.parts["auxk"].detach(), cloned_grads(sae)))
    (full, full_grads), (limited, limited_grads) = results
    assert full > 0
    torch.testing.assert_close(limited, full)
    for name in full_grads:
        torch.testing.assert_close(limited_grads[name], full_grads[name], msg=name)
