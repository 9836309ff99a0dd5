"""The one streaming reconstruction accumulator: training's evaluations and `visae eval` both measure with it.

FVU = Σ‖x − x̂‖² / Σ‖x − μ‖², μ the per-dimension mean over all evaluation tokens (docs/metrics.md). The
denominator comes from running sums: Σ‖x − μ‖² = Σ‖x‖² − n‖μ‖², μ = Σx / n. Every sum is float64 and stays
on the device of the tensors it is fed, so streaming a batch costs no host sync; `result()` copies them to
the host once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.core import distributed

if TYPE_CHECKING:
    from jaxtyping import Float

FVU_DEFINITION = (
    "FVU = sum ||x - x_hat||^2 / sum ||x - mu||^2 with mu the per-dimension mean over the evaluation set "
    "(float64, streamed; docs/metrics.md). Explained variance = 1 - FVU. MSE is per element. "
    "rel_bias = E||x_hat||^2 / E<x, x_hat> (< 1 under shrinkage)."
)
DENSE_FREQUENCY = 0.1  # a latent firing on more than this share of the tokens counts as dense
_SCALARS = ("sum_sq_x", "sum_sq_err", "sum_sq_hat", "sum_dot", "sum_cos")


class ReconstructionStats:
    """Float64 running sums over batches of tokens: `update` per batch, `all_reduce` under torchrun, `result()`.

    Given `d_sae`, it also counts each latent's firings in the codes passed to `update` (L0, firing frequency,
    dead and dense fractions).
    """

    def __init__(self, d: int, d_sae: int = 0, device: torch.device | str = "cpu"):
        self.d, self.d_sae = d, d_sae
        self.n = 0
        # One buffer, so that the all-reduce and the copy to the host are one operation each.
        self._sums = torch.zeros(len(_SCALARS) + d + d_sae, dtype=torch.float64, device=device)
        self._scalars, self.sum_x, self.fire_counts = self._sums.split([len(_SCALARS), d, d_sae])

    def update(self, x: Float[Tensor, "batch d_in"], x_hat: Float[Tensor, "batch d_in"],
               z: Float[Tensor, "batch d_sae"] | None = None) -> None:
        """x, x_hat: [tokens, d]; z: the latent codes [tokens, d_sae], if firings are to be counted."""
        x, x_hat = x.detach().double(), x_hat.detach().double()
        # Per-token norms and dot products, reused for the cosine (vector_norm spares the squares' temporaries).
        norm_x, norm_hat = torch.linalg.vector_norm(x, dim=-1), torch.linalg.vector_norm(x_hat, dim=-1)
        dot = torch.linalg.vecdot(x, x_hat)
        cos = dot / (norm_x.clamp_min(1e-12) * norm_hat.clamp_min(1e-12))  # as F.cosine_similarity
        err = torch.linalg.vector_norm(x - x_hat)
        sums = [norm_x.square().sum(), err.square(), norm_hat.square().sum(), dot.sum(), cos.sum()]  # as _SCALARS
        self._scalars += torch.stack(sums)
        self.sum_x += x.sum(0)
        self.n += x.shape[0]
        if z is not None:
            self.fire_counts += (z.detach() != 0).sum(0)

    def all_reduce(self) -> None:
        """Sum over ranks, each of which streamed its own share of the tokens (one collective)."""
        if distributed.world_size() == 1:
            return
        flat = distributed.all_reduce_sum(torch.cat([self._sums.new_tensor([self.n]), self._sums]))
        self.n = int(flat[0])
        self._sums.copy_(flat[1:])

    @property
    def mean(self) -> Float[Tensor, " d_in"]:
        """Per-dimension mean of x over the tokens seen so far (for mean-ablation)."""
        return self.sum_x / max(self.n, 1)

    def freq(self) -> Float[Tensor, " d_sae"]:
        """Each latent's firing frequency, on the accumulator's device."""
        return self.fire_counts / self.n

    def result(self) -> dict:
        """The figures; those of the latent codes (L0, dead and dense fractions) only when `d_sae` was given."""
        if self.n == 0:
            raise ValueError("no evaluation tokens were seen; check the store and the token kind")
        host = self._sums.cpu()
        scalars, sum_x, fire_counts = host.split([len(_SCALARS), self.d, self.d_sae])
        s = dict(zip(_SCALARS, scalars.tolist()))
        variance = s["sum_sq_x"] - float(sum_x.square().sum()) / self.n
        fvu = s["sum_sq_err"] / variance if variance > 0 else math.nan
        out = {
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "mse": s["sum_sq_err"] / (self.n * self.d),
            "cosine": s["sum_cos"] / self.n,
            "rel_bias": s["sum_sq_hat"] / s["sum_dot"] if s["sum_dot"] != 0 else math.nan,
        }
        if self.d_sae:
            out |= {"l0": float(fire_counts.sum()) / self.n,
                    "dead_fraction": float((fire_counts == 0).double().mean()),
                    "dense_fraction_10": float((fire_counts / self.n > DENSE_FREQUENCY).double().mean())}
        return out


class HookStats:
    """A dictionary's reconstructions over all its hooks together (`total`, counting firings given `d_sae`), plus
    one accumulator per hook when it reconstructs several (a crosscoder: `slices`, each hook's columns of the
    concatenated reconstruction, as `SAE.hook_slices` gives them)."""

    def __init__(self, slices: list[slice], d_sae: int = 0, device: torch.device | str = "cpu"):
        self.slices = slices
        self.total = ReconstructionStats(slices[-1].stop, d_sae, device)
        self.per_hook = [ReconstructionStats(s.stop - s.start, 0, device) for s in slices] if len(slices) > 1 else []

    def update(self, target: Float[Tensor, "batch d"], x_hat: Float[Tensor, "batch d"],
               z: Float[Tensor, "batch d_sae"] | None = None) -> None:
        self.total.update(target, x_hat, z)
        for where, stats in zip(self.slices, self.per_hook):
            stats.update(target[:, where], x_hat[:, where])

    def all_reduce(self) -> None:
        for stats in (self.total, *self.per_hook):
            stats.all_reduce()
