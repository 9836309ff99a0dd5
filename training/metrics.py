"""Metrics gathered while training.

`StepMetrics` sums per-step device tensors over a logging window and syncs once per window.
`ReconstructionSummary` streams the closing summary in float64 with the definitions of design.md §5:
FVU = Σ‖x − x̂‖² / Σ‖x − μ‖² with μ the per-dimension mean over the evaluation tokens.
"""

from __future__ import annotations

import torch
from visae.core import distributed


class StepMetrics:
    """Running sums of scalar tensors; `flush` returns their window means with one host sync."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
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


def batch_fvu_parts(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator of the per-batch FVU estimate (the mean taken over this batch)."""
    x, x_hat = x.float(), x_hat.float()
    return (x - x_hat).pow(2).sum(), (x - x.mean(0)).pow(2).sum()


class ReconstructionSummary:
    """FVU, MSE, L0 and firing frequencies over a stream of evaluation batches, in float64."""

    def __init__(self, d_in: int, d_sae: int):
        self.n = torch.zeros((), dtype=torch.float64)
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_sq_x = torch.zeros((), dtype=torch.float64)
        self.sum_sq_err = torch.zeros((), dtype=torch.float64)
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64)

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor) -> None:
        x, x_hat = x.detach().double().cpu(), x_hat.detach().double().cpu()
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_sq_x += x.pow(2).sum()
        self.sum_sq_err += (x - x_hat).pow(2).sum()
        self.fire_counts += (z.detach() != 0).sum(0).double().cpu()

    def all_reduce(self) -> None:
        """Sum the accumulators over ranks (each rank streamed its own share of the tokens)."""
        for t in (self.n, self.sum_x, self.sum_sq_x, self.sum_sq_err, self.fire_counts):
            if distributed.world_size() > 1:
                torch.distributed.all_reduce(t)

    def freq(self) -> torch.Tensor:
        return self.fire_counts / self.n

    def result(self) -> dict[str, float]:
        n, d = float(self.n), self.sum_x.numel()
        centred = float(self.sum_sq_x - self.sum_x.pow(2).sum() / n)
        return {
            "fvu": float(self.sum_sq_err) / centred,
            "mse": float(self.sum_sq_err) / (n * d),
            "l0": float(self.fire_counts.sum()) / n,
            "dead_fraction": float((self.fire_counts == 0).double().mean()),
            "dense_fraction_10": float((self.freq() > 0.1).double().mean()),
            "n_eval_tokens": int(n),
        }


def log10_freq(freq: torch.Tensor) -> torch.Tensor:
    """log10(firing frequency + 1e-10), SAELens's `sparsity` convention."""
    return torch.log10(freq + 1e-10)
