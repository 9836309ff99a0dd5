"""Decoding sparse codes without a dense [batch, d_sae] matmul, forward and backward.

A code is a flat list of (row, latent, value) triples: row r of the output is the sum of
value * W_dec[latent] over its triples. TopK codes are the special case with k triples per row.
Forward and the W_dec gradient are `embedding_bag` sums (no [nnz, d] tensor is built); the value
gradient is a sampled matmul (`torch.sparse.sampled_addmm`: a dot product only at the code's
positions). Costs scale with nnz * d, not batch * d_sae * d.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def _bag_offsets(sorted_keys: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Start offsets of each bag given bag keys sorted ascending (empty bags allowed, no host sync)."""
    counts = torch.zeros(n_bags, dtype=torch.long, device=sorted_keys.device)
    counts.index_add_(0, sorted_keys, torch.ones_like(sorted_keys))
    return torch.cumsum(counts, 0) - counts


def sort_keys(keys: torch.Tensor, n_values: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable sort of integer keys in [0, n_values), on the narrowest dtype that holds them.

    A stable integer sort is a radix sort; narrower keys need fewer passes (int16 is ~4x faster than int64).
    """
    dtype = torch.int16 if n_values <= 2**15 else torch.int32 if n_values <= 2**31 else torch.int64
    sorted_keys, order = torch.sort(keys.to(dtype), stable=True)
    return sorted_keys.long(), order


def _sampled_dot(grad_out: torch.Tensor, offsets: torch.Tensor, latents: torch.Tensor, W_dec: torch.Tensor):
    """<grad_out[row of j], W_dec[latents[j]]> for every triple j, without gathering [nnz, d]."""
    crow = torch.cat([offsets, offsets.new_full((1,), latents.shape[0])])
    pattern_values = torch.ones(latents.shape[0], dtype=W_dec.dtype, device=W_dec.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        pattern = torch.sparse_csr_tensor(
            crow, latents, pattern_values, size=(grad_out.shape[0], W_dec.shape[0]), check_invariants=False
        )
        return torch.sparse.sampled_addmm(pattern, grad_out, W_dec.T, beta=0.0).values()


class SparseDecode(torch.autograd.Function):
    """out[r] = sum over triples j with rows[j] == r of values[j] * W_dec[latents[j]]; rows sorted ascending."""

    @staticmethod
    def forward(ctx, values, rows, latents, W_dec, n_rows):
        offsets = _bag_offsets(rows, n_rows)
        out = F.embedding_bag(latents, W_dec, offsets, mode="sum", per_sample_weights=values)
        ctx.save_for_backward(values, rows, latents, W_dec, offsets)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        values, rows, latents, W_dec, offsets = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = _sampled_dot(grad_out, offsets, latents, W_dec)
        if ctx.needs_input_grad[3]:
            sorted_latents, order = sort_keys(latents, W_dec.shape[0])
            offsets = _bag_offsets(sorted_latents, W_dec.shape[0])
            grad_W = F.embedding_bag(rows[order], grad_out, offsets, mode="sum", per_sample_weights=values[order])
        return grad_values, None, None, grad_W, None


def decode_triples(values: torch.Tensor, rows: torch.Tensor, latents: torch.Tensor, W_dec: torch.Tensor, n_rows: int):
    """Sparse decode of flat triples (rows sorted ascending) to [n_rows, d]; differentiable in values and W_dec."""
    return SparseDecode.apply(values.to(W_dec.dtype), rows, latents, W_dec, n_rows)


def decode_topk(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Sparse decode of a TopK code: values, indices [batch, k] -> [batch, d] (no bias)."""
    batch, k = indices.shape
    rows = torch.arange(batch, device=indices.device).repeat_interleave(k)
    return decode_triples(values.reshape(-1), rows, indices.reshape(-1), W_dec, batch)
