"""The pattern of a sparse code: which (row, latent) pairs are non-zero.

A code's sparse products need its pairs grouped two ways: by row (decoding, the value gradient)
and by latent (the W_dec and W_enc gradients). `SparseCode` computes each grouping once, so the
encoder's and the decoder's backward passes share one sort.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from jaxtyping import Bool, Float, Int


def bag_offsets(sorted_keys: Int[Tensor, " nnz"], n_bags: int) -> Int[Tensor, " n_bags"]:
    """Start offsets of each bag given bag keys sorted ascending (empty bags allowed, no host sync)."""
    counts = torch.zeros(n_bags, dtype=torch.long, device=sorted_keys.device)
    counts.index_add_(0, sorted_keys, torch.ones_like(sorted_keys))
    return torch.cumsum(counts, 0) - counts


def sort_keys(keys: Int[Tensor, " nnz"], n_values: int) -> tuple[Int[Tensor, " nnz"], Int[Tensor, " nnz"]]:
    """Stable sort of integer keys in [0, n_values), on the narrowest dtype that holds them.

    A stable integer sort is a radix sort; narrower keys need fewer passes (int16 is ~4x faster than int64).
    """
    dtype = torch.int16 if n_values <= 2**15 else torch.int32 if n_values <= 2**31 else torch.int64
    sorted_keys, order = torch.sort(keys.to(dtype), stable=True)
    return sorted_keys.long(), order


class SparseCode:
    """Flat (row, latent) pairs of a code, rows ascending; `k` is set when every row has exactly k pairs.

    Shapes name the `n_rows` axis `batch` and the `n_latents` axis `d_sae`."""

    def __init__(self, rows: Int[Tensor, " nnz"], latents: Int[Tensor, " nnz"], n_rows: int, n_latents: int,
                 k: int | None = None):
        self.rows, self.latents = rows, latents
        self.n_rows, self.n_latents, self.k = n_rows, n_latents, k
        self._same_latents: SparseCode | None = None

    def regrouped(self, rows: Int[Tensor, " nnz"], n_rows: int) -> SparseCode:
        """The same pairs, in the same order, in other rows (`rows` ascending in [0, n_rows)): e.g. several
        bags per row. Its grouping by latent is this code's (one sort for both)."""
        code = SparseCode(rows, self.latents, n_rows, self.n_latents)
        code._same_latents = self
        return code

    @classmethod
    def from_topk(cls, indices: Int[Tensor, "batch k"], n_latents: int) -> SparseCode:
        """The code of a [batch, k] index tensor: k pairs per row."""
        batch, k = indices.shape
        rows = torch.arange(batch, device=indices.device).repeat_interleave(k)
        return cls(rows, indices.reshape(-1), batch, n_latents, k)

    @cached_property
    def row_offsets(self) -> Int[Tensor, " batch"]:
        if self.k is not None:
            return torch.arange(0, self.n_rows * self.k, self.k, device=self.rows.device)
        return bag_offsets(self.rows, self.n_rows)

    @cached_property
    def by_latent(self) -> tuple[Int[Tensor, " nnz"], Int[Tensor, " nnz"], Int[Tensor, " d_sae"]]:
        """(order, rows[order], offsets): the pairs regrouped by latent, for per-latent sums."""
        if self._same_latents is not None:
            order, _, offsets = self._same_latents.by_latent
            return order, self.rows[order], offsets
        sorted_latents, order = sort_keys(self.latents, self.n_latents)
        return order, self.rows[order], bag_offsets(sorted_latents, self.n_latents)

    def gather(self, dense: Float[Tensor, "batch d_sae"]) -> Float[Tensor, " nnz"]:
        """dense[row, latent] for every pair, flat [nnz]."""
        if self.k is not None:
            return dense.gather(1, self.latents.view(self.n_rows, self.k)).view(-1)
        return dense[self.rows, self.latents]

    def fired(self, values: Float[Tensor, " nnz"]) -> Bool[Tensor, " d_sae"]:
        """bool[n_latents]: latents with a positive value anywhere in the code (no host sync)."""
        return self.latent_sums((values > 0).to(values.dtype)) > 0

    def latent_sums(self, values: Float[Tensor, " nnz"]) -> Float[Tensor, " d_sae"]:
        """Per-latent sum of values [nnz] -> [n_latents]."""
        return torch.zeros(self.n_latents, dtype=values.dtype, device=values.device).index_add_(0, self.latents, values)
