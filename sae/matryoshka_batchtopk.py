"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): BatchTopK whose reconstruction
loss is summed over nested prefixes of the dictionary, so the first latents learn general features
and later ones refine them. Prefix widths come from `cfg.prefix_widths()`. Loss parts: one
`fvu_<width>` per prefix (each reconstruction includes b_dec), plus `auxk`. Saved as `jumprelu`.

Every prefix reconstruction comes from the one sparse batch code: its pairs are in row-major order (by
row, then by latent), so within a row the pairs of each prefix group [previous width, width) are
contiguous. One embedding-bag decode with a bag per (row, group) gives each group's contribution
[batch, groups, d_in]; prefix reconstructions are its running sum over groups, whose squared errors
`sae.kernels.prefix_errors` computes in place. Decoding, its backward and the encoder's backward cost what
one full decode does, whatever the number of prefixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.sae.batchtopk import BatchCode, BatchTopKSAE
from visae.sae.kernels.prefix_errors import prefix_errors
from visae.sae.kernels.sparse_code import SparseCode
from visae.sae.kernels.sparse_decode import decode_code
from visae.sae.registry import ArchitectureTraits
from visae.sae.topk import TOPK_SAE_RECIPE

if TYPE_CHECKING:
    from jaxtyping import Float


def prefix_groups(code: SparseCode, widths: list[int]) -> SparseCode:
    """The code with one row per (row, prefix group): group g holds the latents in [widths[g-1], widths[g]).

    Needs the pairs ordered by latent within each row (as `BatchCode`'s are); row r, group g is row
    r * len(widths) + g."""
    bounds = torch.tensor(widths[:-1], dtype=code.latents.dtype, device=code.latents.device)
    group = torch.bucketize(code.latents, bounds, right=True)
    return code.regrouped(code.rows * len(widths) + group, code.n_rows * len(widths))


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    architecture = "matryoshka_batchtopk"
    traits = ArchitectureTraits(sparsity="k", lr_scales_with_d_in=True, sparsity_warmup=0.0, needs_calibration=True,
                                saved_as="jumprelu", extra_tensors=("threshold",), **TOPK_SAE_RECIPE)

    def reconstruction_parts(self, target: Float[Tensor, "batch d_out"], code: BatchCode,
                             values: Float[Tensor, " nnz"], latent_free: Float[Tensor, "*batch d_out"]) -> tuple[
                                 dict[str, Float[Tensor, ""]], Float[Tensor, "batch d_out"]]:
        widths = self.cfg.prefix_widths()
        groups = decode_code(values, prefix_groups(code, widths), self.W_dec).view(code.n_rows, len(widths), -1)
        target = target.detach()
        squared, error = prefix_errors(latent_free - target, groups)
        fvus = squared / (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
        return {f"fvu_{width}": fvu for width, fvu in zip(widths, fvus.unbind(), strict=True)}, error + target
