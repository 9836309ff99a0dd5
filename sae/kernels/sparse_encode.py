"""TopK encoding whose backward touches only the code's (row, latent) pairs.

With a TopK code, the gradient of the pre-activations is zero except at the k kept latents of each
row, yet autograd through `addmm` + `topk` builds a dense [batch, d_sae] gradient and runs two more
dense GEMMs. Here the pre-activations are computed once without autograd, and the kept values are
re-attached to the graph by `gather_pre_acts`, whose backward costs O(batch * k * d): the W_enc
gradient is an `embedding_bag` over the inputs, grouped by latent with the sort the decoder's
backward shares (`SparseCode.by_latent`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from visae.sae.kernels.sparse_code import SparseCode

if TYPE_CHECKING:
    from jaxtyping import Float


class GatherPreActs(torch.autograd.Function):
    """values[j] = pre[pair j of the code], where pre = x_in @ W_enc + b_enc was computed without autograd.

    The inputs x_in get no gradient. When the encoder subtracts b_dec from its input
    (x_in = x - b_dec), pass b_dec to route its share of the gradient: -W_enc @ dL/db_enc.
    """

    @staticmethod
    def forward(ctx, x_in: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"],
                b_enc: Float[Tensor, " d_sae"], b_dec: Float[Tensor, " d_in"] | None,
                pre: Float[Tensor, "batch d_sae"], code: SparseCode) -> Float[Tensor, " nnz"]:
        ctx.code = code
        ctx.save_for_backward(x_in, W_enc)
        return code.gather(pre)

    @staticmethod
    def backward(ctx, grad: Float[Tensor, " nnz"]) -> tuple[
        None, Float[Tensor, "d_in d_sae"] | None, Float[Tensor, " d_sae"] | None, Float[Tensor, " d_in"] | None,
        None, None,
    ]:
        x_in, W_enc = ctx.saved_tensors
        code = ctx.code
        g = grad.to(W_enc.dtype).contiguous()
        grad_W = grad_b_enc = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            order, rows, offsets = code.by_latent
            grad_W_t = F.embedding_bag(rows, x_in.to(W_enc.dtype), offsets, mode="sum", per_sample_weights=g[order])
            grad_W = grad_W_t.t()
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_b_enc = code.latent_sums(g)
        if ctx.needs_input_grad[3]:
            grad_b_dec = -(W_enc @ grad_b_enc)
        return None, grad_W, grad_b_enc, grad_b_dec, None, None


def gather_pre_acts(x_in: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"],
                    b_enc: Float[Tensor, " d_sae"], pre: Float[Tensor, "batch d_sae"], code: SparseCode,
                    b_dec: Float[Tensor, " d_in"] | None = None) -> Float[Tensor, " nnz"]:
    """Flat pre[pairs of code], differentiable in W_enc, b_enc (and b_dec) through a sparse backward."""
    return GatherPreActs.apply(x_in.detach(), W_enc, b_enc, b_dec, pre.detach(), code)
