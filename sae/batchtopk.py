"""BatchTopK SAE (Bussmann et al. 2024): keep the k * batch largest activations of the whole batch,
so tokens get a variable number of latents averaging k.

For inference, where no batch is at hand, it keeps a running (EMA) estimate of the smallest
activation the batch-level TopK let through, and encodes with that global threshold. It is saved as
a `jumprelu` SAE with that threshold, following SAELens's convention. Loss parts as in `sae.topk`.

Training takes TopK's sparse path (`sae.topk.detached_pre_acts`): the pre-activations without autograd,
the batch-level selection by threshold (`sae.kernels.batch_select`), only the kept values re-attached to
autograd, the embedding-bag decoder; nothing else of size [batch, d_sae] is built.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.sae.base import SAE, LossOutput, TrainState, sum_parts
from visae.sae.kernels.batch_select import batch_topk_indices
from visae.sae.kernels.sparse_code import SparseCode
from visae.sae.kernels.sparse_decode import decode_code
from visae.sae.registry import ArchitectureTraits
from visae.sae.topk import TOPK_SAE_RECIPE, auxk_loss, detached_pre_acts, fraction_unexplained, mask_live

if TYPE_CHECKING:
    from jaxtyping import Float, Int


class BatchCode(SparseCode):
    """A batch-level sparse code: the (positive) k * batch largest pre-activations of the batch, as (row, latent)
    pairs in row-major order (by row, then by latent). Entries <= 0 of the dense rule's top-k are left out:
    after the ReLU they are zeros."""

    def __init__(self, flat: Int[Tensor, " nnz"], batch: int, d_sae: int):
        super().__init__(flat // d_sae, flat % d_sae, batch, d_sae)
        self.flat = flat
        self.batch = batch

    @classmethod
    def select(cls, pre: Float[Tensor, "batch d_sae"], k: int) -> BatchCode:
        """The code of `pre.relu().reshape(-1).topk(k * batch)` (its positive entries)."""
        batch, d_sae = pre.shape
        return cls(batch_topk_indices(pre, k * batch), batch, d_sae)

    def gather(self, dense: Float[Tensor, "batch d_sae"]) -> Float[Tensor, " nnz"]:
        return dense.reshape(-1)[self.flat]


def smallest_positive(values: Float[Tensor, " nnz"]) -> Float[Tensor, ""]:
    """The smallest positive value (inf if none)."""
    inf = torch.full((), float("inf"), dtype=values.dtype, device=values.device)
    return torch.where(values > 0, values, inf).min() if values.numel() else inf


class BatchTopKSAE(SAE):
    architecture = "batchtopk"
    traits = ArchitectureTraits(sparsity="k", lr_scales_with_d_in=True, sparsity_warmup=0.0, needs_calibration=True,
                                saved_as="jumprelu", extra_tensors=("threshold",), **TOPK_SAE_RECIPE)
    threshold: Float[Tensor, ""]  # a buffer (registered in __init__)

    def __init__(self, cfg):
        super().__init__(cfg)
        # Negative until the first training batch sets it.
        self.register_buffer("threshold", torch.full((), -1.0, dtype=self.W_enc.dtype))

    def activate(self, pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        return pre.relu() * (pre > self.threshold.clamp_min(0)).to(pre.dtype)

    def export_extra(self):
        exported = super().export_extra()
        exported.tensors = {"threshold": self.threshold.clamp_min(0).expand(self.cfg.d_sae).clone()}
        return exported

    @torch.no_grad()
    def update_threshold(self, values: Float[Tensor, " nnz"]) -> None:
        """EMA of the smallest kept activation (`values`: the code's, after the ReLU); the first batch sets
        it directly. No host sync."""
        smallest = smallest_positive(values.detach()).to(self.threshold.dtype)
        m = self.cfg.threshold_momentum
        ema = torch.where(self.threshold < 0, smallest, m * self.threshold + (1 - m) * smallest)
        self.threshold.copy_(torch.where(torch.isfinite(smallest), ema, self.threshold))

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Float[Tensor, "batch d_in"]]) -> None:
        """Set the threshold from the final weights: the mean over batches of the smallest activation the
        batch-level TopK keeps. The running EMA lags behind weights that were still moving at the end of
        training, which put the inference L0 of short runs off k (by 10% after 300 steps at a high LR)."""
        smallest = []
        for batch in batches:
            pre = self.pre_acts(self.split_batch(batch)[0])
            smallest.append(smallest_positive(BatchCode.select(pre, self.cfg.k).gather(pre)))
        finite = [v for v in smallest if torch.isfinite(v)]
        if finite:
            self.threshold.copy_(torch.stack(finite).mean())

    def reconstruction_parts(self, target: Float[Tensor, "batch d_out"], code: BatchCode,
                             values: Float[Tensor, " nnz"], latent_free: Float[Tensor, "*batch d_out"]) -> tuple[
                                 dict[str, Float[Tensor, ""]], Float[Tensor, "batch d_out"]]:
        """The reconstruction loss parts and the (full) reconstruction, in the scaled units, from the code's
        values (after the ReLU) and the part of the reconstruction not made by latents (`SAE.latent_free`)."""
        recon = decode_code(values, code, self.W_dec) + latent_free
        return {"fvu": fraction_unexplained(target, recon)}, recon

    def training_losses(self, x: Float[Tensor, "batch d_batch"], state: TrainState) -> LossOutput:
        step = detached_pre_acts(self, x)
        code = BatchCode.select(step.pre, self.cfg.k)
        values = step.select(code).relu()
        if self.training:
            self.update_threshold(values)
        parts, recon = self.reconstruction_parts(step.target, code, values, self.latent_free(step.scaled_in))
        if state.dead_mask is not None:
            # The kept values are already gathered: the scratch pre-activations can be masked in place.
            dead_pre = mask_live(step.pre, state.dead_mask, in_place=True)
            parts["auxk"] = auxk_loss(self, dead_pre, step.target - recon, state.dead_mask, step.select,
                                      state.dead_count)
        return LossOutput(
            total=sum_parts(parts),
            parts=parts,
            x_hat=recon / self.output_scale(),
            fired=code.fired(values),
            l0=(values > 0).sum().to(step.pre.dtype) / code.batch,
        )
