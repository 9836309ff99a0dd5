"""Exact batch-level top-k selection (BatchTopK) over the [batch, d_sae] pre-activations, on CPU by threshold.

BatchTopK keeps the `count` = k * batch largest activations of the whole batch: `relu(pre).reshape(-1).topk(count)`.
On CPU one `torch.topk` over the 25M entries of a 4096 x 6144 batch is serial and costs more than the encoder
GEMM (~350 ms); a grouped selection as in `topk_select` still costs ~100 ms. Here instead:

1. estimate a threshold a little below the count-th largest value from a strided sample of the entries
   (sample quantile with a margin of a few standard deviations of the count);
2. one pass over the buffer: the flat indices of the positive entries at or above it, ascending (the maxima
   of strided groups of 8 entries first, then only the members of groups that pass); too few (the estimate
   was too high, which the margin makes rare) -> lower it and pass again, down to "every positive entry";
3. among those candidates (~1.1 * count), the exact count-th largest value (`kthvalue`): keep what is above
   it, and the first of the entries equal to it until exactly `count` are kept, as `torch.topk` keeps
   exactly `count` of tied entries.

~15 ms at that size (2 threads), and the indices come out ascending (row-major: by row, then by latent), which is the
order `SparseCode` needs, so no sort follows. Entries <= 0 are never kept: they are ReLU zeros in the dense
rule, and contribute neither to a reconstruction nor to a gradient (fewer than `count` indices are returned
when fewer entries are positive). Off the CPU one `torch.topk` is used (it may keep entries <= 0, which the
caller's ReLU zeroes): `topk_flat_indices`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.sae.kernels.sparse_code import sort_keys

if TYPE_CHECKING:
    from jaxtyping import Float, Int

SAMPLE = 2**18  # entries in the strided sample the threshold is estimated from
MARGIN_STDS = 4.0  # how far (in standard deviations of the sampled count) below the estimate to start
GROUP = 8  # entries per strided group skipped whole when their maximum is below the threshold


def batch_topk_indices(pre: Float[Tensor, "batch d_sae"], count: int) -> Int[Tensor, " nnz"]:
    """Ascending flat indices (row * d_sae + latent) of the `count` largest positive entries of `pre`.

    Exactly the positive entries of `pre.relu().reshape(-1).topk(count)` (the same count of tied entries, the
    first ones in flat order); all positive entries if fewer than `count` are positive."""
    if pre.device.type != "cpu":
        return topk_flat_indices(pre, count)
    flat = pre.reshape(-1)
    n = flat.numel()
    if count <= 0:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    if count >= n:
        return _at_least(flat, 0.0)[0]
    sample = _strided_sample(flat, pre.shape[-1])
    rank = _sample_rank(sample.numel(), count, n)
    while True:
        threshold = float(sample.topk(rank, sorted=False).values.min()) if rank <= sample.numel() else 0.0
        candidates, values = _at_least(flat, threshold)
        if candidates.numel() >= count or threshold <= 0:
            break
        rank *= 4  # the estimate was too high (a sample unlike the whole): lower it
    if candidates.numel() <= count:
        return candidates
    kth = values.kthvalue(values.numel() - count + 1).values
    keep = values > kth
    ties = values == kth
    keep |= ties & (ties.cumsum(0) <= count - keep.sum())
    return candidates[keep]


def topk_flat_indices(pre: Float[Tensor, "batch d_sae"], count: int) -> Int[Tensor, " count"]:
    """Ascending flat indices of `pre.reshape(-1).topk(count)`, entries <= 0 included (the off-CPU path)."""
    flat = pre.reshape(-1)
    indices = flat.topk(min(count, flat.numel()), sorted=False).indices
    return sort_keys(indices, flat.numel())[0]


def _strided_sample(flat: Float[Tensor, " n"], width: int) -> Float[Tensor, " sample"]:
    """About SAMPLE entries, at a stride coprime with the row width (so that every latent is sampled)."""
    stride = max(1, flat.numel() // SAMPLE)
    while math.gcd(stride, width) != 1:
        stride += 1
    return flat[::stride].contiguous()


def _sample_rank(sample_size: int, count: int, n: int) -> int:
    """The rank in the sample whose value is, with margin, below the count-th largest of all n entries."""
    expected = sample_size * count / n
    return max(1, math.ceil(expected + MARGIN_STDS * math.sqrt(expected) + 1))


def _at_least(flat: Float[Tensor, " n"], threshold: float) -> tuple[Int[Tensor, " m"], Float[Tensor, " m"]]:
    """Ascending indices, and values, of the entries >= threshold that are also > 0.

    Strided groups of GROUP entries (j, j + n / GROUP, ...) whose maximum fails the test are skipped whole: one
    elementwise max of GROUP slices, then `nonzero` over the group maxima and over the few candidate groups'
    members (`nonzero` over all n entries costs twice as much, and does not gain from a second thread)."""

    def passes(v: Tensor) -> Tensor:
        return v > 0 if threshold <= 0 else v >= threshold

    n = flat.numel()
    if n % GROUP == 0:
        span = n // GROUP
        groups = passes(flat.view(GROUP, span).amax(0)).nonzero().squeeze(1)
        if groups.numel() * 4 <= span:  # else most groups pass: test every entry
            # Member i of group j is j + i * span: laid out [GROUP, groups] (i major), the indices ascend.
            members = (torch.arange(0, n, span, device=flat.device).unsqueeze(1) + groups).view(-1)
            values = flat[members]
            kept = passes(values).nonzero().squeeze(1)
            return members[kept], values[kept]
    indices = passes(flat).nonzero().squeeze(1)
    return indices, flat[indices]
