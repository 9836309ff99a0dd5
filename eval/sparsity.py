"""Sparsity and firing statistics over N evaluation tokens (docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SPARSITY_DEFINITION = (
    "L0 = mean number of nonzero latents per token; dead = fired on none of the N evaluation tokens "
    "(N = n_tokens); dense_10 / dense_1 = share of latents firing on more than 10% / 1% of tokens; "
    "freq_hist = histogram of log10(firing frequency) over live latents (docs/metrics.md)."
)
HIST_EDGES = np.linspace(-8.0, 0.0, 33)


@dataclass
class FiringStats:
    """Per-latent counts, activation sums and maxima, streamed over batches of codes."""

    d_sae: int
    n_tokens: int = 0
    sum_l0: float = 0.0
    fire_count: torch.Tensor = field(init=False)
    act_sum: torch.Tensor = field(init=False)
    act_max: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.fire_count = torch.zeros(self.d_sae, dtype=torch.int64)
        self.act_sum = torch.zeros(self.d_sae, dtype=torch.float64)
        self.act_max = torch.zeros(self.d_sae, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        """z: [tokens, d_sae] latent activations."""
        fired = z != 0  # reduced where z lives (a GPU under device=auto); the [d_sae] sums are kept on the host
        self.n_tokens += z.shape[0]
        self.sum_l0 += float(fired.sum())
        self.fire_count += fired.sum(0).cpu()
        self.act_sum += z.double().sum(0).cpu()
        self.act_max = torch.maximum(self.act_max, z.detach().double().max(0).values.cpu())

    def frequency(self) -> np.ndarray:
        return (self.fire_count.double() / max(self.n_tokens, 1)).numpy()

    def mean_act_when_firing(self) -> np.ndarray:
        count = self.fire_count.double()
        return torch.where(count > 0, self.act_sum / count.clamp(min=1), torch.nan).numpy()

    def result(self) -> dict:
        if self.n_tokens == 0:
            raise ValueError("no evaluation tokens were seen; check the store and the token kind")
        freq = self.frequency()
        counts, edges = log10_frequency_histogram(freq)
        return {
            "l0": self.sum_l0 / self.n_tokens,
            "n_tokens": self.n_tokens,
            "dead_fraction": float((freq == 0).mean()),
            "n_dead": int((freq == 0).sum()),
            "dense_10": float((freq > 0.10).mean()),
            "dense_1": float((freq > 0.01).mean()),
            "freq_hist": {"edges": edges.tolist(), "counts": counts.tolist()},
        }


def log10_frequency_histogram(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of log10 firing frequency of the live latents; dead ones are counted in `dead_fraction`."""
    live = freq[freq > 0]
    low = min(HIST_EDGES[0], float(np.floor(np.log10(live.min())))) if live.size else HIST_EDGES[0]
    edges = np.linspace(low, 0.0, 33) if low < HIST_EDGES[0] else HIST_EDGES
    counts, _ = np.histogram(np.log10(live), bins=edges)
    return counts, edges
