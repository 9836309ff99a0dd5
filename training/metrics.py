"""Metrics gathered while training.

`StepMetrics` sums per-step device tensors over a logging window and syncs once per window. Evaluations
(periodic and closing) stream through `core.reconstruction.ReconstructionStats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.core import distributed

if TYPE_CHECKING:
    from jaxtyping import Float


class StepMetrics:
    """Running sums of scalar tensors; `flush` returns their window means with one host sync."""

    def __init__(self):
        self.sums: dict[str, Float[Tensor, ""]] = {}
        self.steps = 0

    def add(self, values: dict[str, Float[Tensor, ""]]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1

    def flush(self, all_ranks: bool = False) -> dict[str, float]:
        """Window means (averaged over ranks when `all_ranks`), then reset."""
        if not self.sums:
            return {}
        names = list(self.sums)
        means = torch.stack([self.sums[n] for n in names]) / self.steps
        if all_ranks:
            distributed.all_reduce_mean(means)
        self.sums, self.steps = {}, 0
        return dict(zip(names, means.tolist()))


def batch_fvu_parts(x: Float[Tensor, "batch d_in"],
                    x_hat: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, ""], Float[Tensor, ""]]:
    """Numerator and denominator of the per-batch FVU estimate (the mean taken over this batch)."""
    x, x_hat = x.float(), x_hat.float()
    return (x - x_hat).pow(2).sum(), (x - x.mean(0)).pow(2).sum()


def log10_freq(freq: Float[Tensor, " d_sae"]) -> Float[Tensor, " d_sae"]:
    """log10(firing frequency + 1e-10), SAELens's `sparsity` convention."""
    return torch.log10(freq + 1e-10)
