"""Reconstruction metrics, streamed in float64 over the evaluation tokens (design.md §5).

FVU = Σ‖x − x̂‖² / Σ‖x − μ‖², with μ the per-dimension mean over the whole evaluation set.
The denominator is recovered from running sums: Σ‖x − μ‖² = Σ‖x‖² − n‖μ‖², μ = Σx / n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FVU_DEFINITION = (
    "FVU = sum ||x - x_hat||^2 / sum ||x - mu||^2 with mu the per-dimension mean over the evaluation set "
    "(float64, streamed; design.md §5). Explained variance = 1 - FVU. MSE is per element. "
    "rel_bias = E||x_hat||^2 / E<x, x_hat> (< 1 under shrinkage)."
)


@dataclass
class ReconstructionStats:
    """Running float64 sums; call `update` per batch of tokens, then `result()`."""

    d: int
    n: int = 0
    sum_x: torch.Tensor = field(init=False)
    sum_sq_x: float = 0.0
    sum_sq_err: float = 0.0
    sum_sq_hat: float = 0.0
    sum_dot: float = 0.0
    sum_cos: float = 0.0

    def __post_init__(self) -> None:
        self.sum_x = torch.zeros(self.d, dtype=torch.float64)

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """x, x_hat: [tokens, d]."""
        x, x_hat = x.detach().double(), x_hat.detach().double()
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_sq_x += float(x.square().sum())
        self.sum_sq_err += float((x - x_hat).square().sum())
        self.sum_sq_hat += float(x_hat.square().sum())
        self.sum_dot += float((x * x_hat).sum())
        self.sum_cos += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1, eps=1e-12).sum())

    @property
    def mean(self) -> torch.Tensor:
        """Per-dimension mean of x over the tokens seen so far (used for mean-ablation)."""
        return self.sum_x / max(self.n, 1)

    def total_variance(self) -> float:
        """Σ‖x − μ‖² with the per-dimension mean μ."""
        return self.sum_sq_x - float(self.sum_x.square().sum()) / self.n

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("no evaluation tokens were seen; check the store and the token kind")
        variance = self.total_variance()
        fvu = self.sum_sq_err / variance if variance > 0 else float("nan")
        return {
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "mse": self.sum_sq_err / (self.n * self.d),
            "cosine": self.sum_cos / self.n,
            "rel_bias": self.sum_sq_hat / self.sum_dot if self.sum_dot != 0 else float("nan"),
        }
