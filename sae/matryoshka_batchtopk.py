"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): BatchTopK whose reconstruction
loss is summed over nested prefixes of the dictionary, so the first latents learn general features
and later ones refine them. Prefix widths come from `cfg.prefix_widths()`. Loss parts: one
`fvu_<width>` per prefix (each reconstruction includes b_dec), plus `auxk`. Saved as `jumprelu`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from visae.sae.batchtopk import BatchCode, BatchTopKSAE
from visae.sae.registry import ArchitectureTraits
from visae.sae.topk import fraction_unexplained

if TYPE_CHECKING:
    from jaxtyping import Float


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    architecture = "matryoshka_batchtopk"
    traits = ArchitectureTraits(sparsity="k", base_lr=2e-4, lr_scales_with_d_in=True, sparsity_warmup=0.0,
                                needs_calibration=True, saved_as="jumprelu", extra_tensors=("threshold",))

    def reconstruction_parts(self, target: Float[Tensor, "batch d_in"],
                             code: BatchCode) -> tuple[dict[str, Float[Tensor, ""]], Float[Tensor, "batch d_in"]]:
        parts = {}
        recon = self.b_dec.expand_as(target)
        start = 0
        for width in self.cfg.prefix_widths():
            in_group = (code.latents >= start) & (code.latents < width)
            recon = recon + code.decode(self.W_dec, code.values * in_group.to(code.values.dtype))
            parts[f"fvu_{width}"] = fraction_unexplained(target, recon)
            start = width
        return parts, recon
