"""Decoding sparse codes without a dense [batch, d_sae] matmul, forward and backward.

Row r of the output is the sum of value * W_dec[latent] over the code's (r, latent) pairs
(`sae.kernels.sparse_code`). Forward and the W_dec gradient are `embedding_bag` sums (no [nnz, d] tensor is
built); the value gradient is a sampled matmul (`torch.sparse.sampled_addmm`: a dot product only at
the code's positions). Costs scale with nnz * d, not batch * d_sae * d.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from visae.sae.kernels.sparse_code import SparseCode

if TYPE_CHECKING:
    from jaxtyping import Float, Int


def _sampled_dot(grad_out: Float[Tensor, "batch d_in"], code: SparseCode,
                 W_dec: Float[Tensor, "d_sae d_in"]) -> Float[Tensor, " nnz"]:
    """<grad_out[row], W_dec[latent]> for every pair of the code, without gathering [nnz, d]."""
    nnz = code.latents.shape[0]
    crow = torch.cat([code.row_offsets, code.row_offsets.new_full((1,), nnz)])
    pattern_values = torch.ones(nnz, dtype=W_dec.dtype, device=W_dec.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        pattern = torch.sparse_csr_tensor(
            crow, code.latents, pattern_values, size=(code.n_rows, W_dec.shape[0]), check_invariants=False
        )
        return torch.sparse.sampled_addmm(pattern, grad_out, W_dec.T, beta=0.0).values()


class SparseDecode(torch.autograd.Function):
    """out[r] = sum over the code's pairs (r, latent) of value * W_dec[latent]."""

    @staticmethod
    def forward(ctx, values: Float[Tensor, " nnz"], W_dec: Float[Tensor, "d_sae d_in"],
                code: SparseCode) -> Float[Tensor, "batch d_in"]:
        ctx.code = code
        ctx.save_for_backward(values, W_dec)
        return F.embedding_bag(code.latents, W_dec, code.row_offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(
        ctx, grad_out: Float[Tensor, "batch d_in"]
    ) -> tuple[Float[Tensor, " nnz"] | None, Float[Tensor, "d_sae d_in"] | None, None]:
        values, W_dec = ctx.saved_tensors
        code = ctx.code
        grad_out = grad_out.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = _sampled_dot(grad_out, code, W_dec)
        if ctx.needs_input_grad[1]:
            order, rows, offsets = code.by_latent
            grad_W = F.embedding_bag(rows, grad_out, offsets, mode="sum", per_sample_weights=values[order])
        return grad_values, grad_W, None


def decode_code(values: Float[Tensor, " nnz"], code: SparseCode,
                W_dec: Float[Tensor, "d_sae d_in"]) -> Float[Tensor, "batch d_in"]:
    """Sparse decode of flat values [nnz] on `code` to [n_rows, d]; differentiable in values and W_dec."""
    return SparseDecode.apply(values.to(W_dec.dtype), W_dec, code)


def decode_triples(values: Float[Tensor, " nnz"], rows: Int[Tensor, " nnz"], latents: Int[Tensor, " nnz"],
                   W_dec: Float[Tensor, "d_sae d_in"], n_rows: int) -> Float[Tensor, "batch d_in"]:
    """Sparse decode of flat triples (rows sorted ascending) to [n_rows, d] (no bias)."""
    return decode_code(values, SparseCode(rows, latents, n_rows, W_dec.shape[0]), W_dec)


def decode_topk(values: Float[Tensor, "batch k"], indices: Int[Tensor, "batch k"],
                W_dec: Float[Tensor, "d_sae d_in"]) -> Float[Tensor, "batch d_in"]:
    """Sparse decode of a TopK code: values, indices [batch, k] -> [batch, d] (no bias)."""
    return decode_code(values.reshape(-1), SparseCode.from_topk(indices, W_dec.shape[0]), W_dec)
