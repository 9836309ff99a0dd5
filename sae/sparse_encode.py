"""TopK encoding whose backward touches only the selected (row, latent) pairs.

With a TopK code, the gradient of the pre-activations is zero except at the k kept latents of each
row, yet autograd through `addmm` + `topk` builds a dense [batch, d_sae] gradient and runs two more
dense GEMMs (for W_enc and for the input). Here the pre-activations are computed once without
autograd, and the kept values are re-attached to the graph by `gather_pre_acts`, whose backward
costs O(batch * k * d): the input gradient is an `embedding_bag` over W_encᵀ rows, the W_enc
gradient a sparse (COO) matrix product of the code gradient with the inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class GatherPreActs(torch.autograd.Function):
    """values[r, j] = pre[r, indices[r, j]] where pre = x_in @ W_enc + b_enc (computed without autograd)."""

    @staticmethod
    def forward(ctx, x_in, W_enc, b_enc, pre, indices):
        ctx.save_for_backward(x_in, W_enc, indices)
        return pre.gather(1, indices)

    @staticmethod
    def backward(ctx, grad):
        x_in, W_enc, indices = ctx.saved_tensors
        batch, k = indices.shape
        d_sae = W_enc.shape[1]
        latents = indices.reshape(-1)
        g = grad.reshape(-1).to(W_enc.dtype).contiguous()
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            offsets = torch.arange(0, batch * k, k, device=indices.device)
            grad_x = F.embedding_bag(latents, W_enc.t().contiguous(), offsets, mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            # W_encᵀ gradient = Gᵀ x_in with G the [batch, d_sae] sparse code gradient; a COO sparse matmul
            # groups the pairs by latent faster than sorting them for an embedding_bag.
            rows = torch.arange(batch, device=indices.device).repeat_interleave(k)
            code_grad_t = torch.sparse_coo_tensor(torch.stack([latents, rows]), g, size=(d_sae, batch),
                                                  check_invariants=False)
            grad_W = torch.sparse.mm(code_grad_t, x_in.detach().to(W_enc.dtype)).t().contiguous()
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device).index_add_(0, latents, g)
        return grad_x, grad_W, grad_b, None, None


def gather_pre_acts(x_in: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, pre: torch.Tensor,
                    indices: torch.Tensor) -> torch.Tensor:
    """pre[r, indices[r, j]], differentiable in x_in, W_enc and b_enc through a sparse backward."""
    return GatherPreActs.apply(x_in, W_enc, b_enc, pre.detach(), indices)
