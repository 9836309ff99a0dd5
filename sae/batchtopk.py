"""BatchTopK SAE (Bussmann et al. 2024): keep the k * batch largest activations of the whole batch,
so tokens get a variable number of latents averaging k.

For inference, where no batch is at hand, it keeps a running (EMA) estimate of the smallest
activation the batch-level TopK let through, and encodes with that global threshold. It is saved as
a `jumprelu` SAE with that threshold, following SAELens's convention. Loss parts as in `sae.topk`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.sae.base import SAE, LossOutput, TrainState, sum_parts
from visae.sae.kernels.sparse_code import SparseCode, sort_keys
from visae.sae.kernels.sparse_decode import decode_code
from visae.sae.registry import ArchitectureTraits
from visae.sae.topk import auxk_loss, fraction_unexplained, mask_live

if TYPE_CHECKING:
    from jaxtyping import Float


class BatchCode(SparseCode):
    """A batch-level sparse code: the k * batch largest activations of the batch, with their values."""

    def __init__(self, pre: Float[Tensor, "batch d_sae"], k: int):
        batch, d_sae = pre.shape
        values, flat = pre.relu().reshape(-1).topk(k * batch, sorted=False)
        flat, order = sort_keys(flat, batch * d_sae)
        super().__init__(flat // d_sae, flat % d_sae, batch, d_sae)
        self.values = values[order]
        self.batch = batch

    def decode(self, W_dec: Float[Tensor, "d_sae d_in"],
               values: Float[Tensor, " nnz"] | None = None) -> Float[Tensor, "batch d_in"]:
        return decode_code(self.values if values is None else values, self, W_dec)

    def smallest_positive(self) -> Float[Tensor, ""]:
        return torch.where(self.values > 0, self.values, torch.full_like(self.values, float("inf"))).min()


class BatchTopKSAE(SAE):
    architecture = "batchtopk"
    traits = ArchitectureTraits(sparsity="k", base_lr=2e-4, lr_scales_with_d_in=True, sparsity_warmup=0.0,
                                needs_calibration=True, saved_as="jumprelu", extra_tensors=("threshold",))
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
    def update_threshold(self, code: BatchCode) -> None:
        """EMA of the smallest kept activation; the first batch sets it directly. No host sync."""
        smallest = code.smallest_positive()
        m = self.cfg.threshold_momentum
        ema = torch.where(self.threshold < 0, smallest, m * self.threshold + (1 - m) * smallest)
        self.threshold.copy_(torch.where(torch.isfinite(smallest), ema, self.threshold))

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Float[Tensor, "batch d_in"]]) -> None:
        """Set the threshold from the final weights: the mean over batches of the smallest activation the
        batch-level TopK keeps. The running EMA lags behind weights that were still moving at the end of
        training, which put the inference L0 of short runs off k (by 10% after 300 steps at a high LR)."""
        smallest = [BatchCode(self.pre_acts(x), self.cfg.k).smallest_positive() for x in batches]
        finite = [v for v in smallest if torch.isfinite(v)]
        if finite:
            self.threshold.copy_(torch.stack(finite).mean())

    def reconstruction_parts(self, target: Float[Tensor, "batch d_in"],
                             code: BatchCode) -> tuple[dict[str, Float[Tensor, ""]], Float[Tensor, "batch d_in"]]:
        recon = code.decode(self.W_dec) + self.b_dec
        return {"fvu": fraction_unexplained(target, recon)}, recon

    def training_losses(self, x: Float[Tensor, "batch d_in"], state: TrainState) -> LossOutput:
        target = self.scale_input(x)
        pre = self.pre_acts(x)
        code = BatchCode(pre, self.cfg.k)
        if self.training:
            self.update_threshold(code)
        parts, recon = self.reconstruction_parts(target, code)
        if state.dead_mask is not None:
            parts["auxk"] = auxk_loss(self, mask_live(pre, state.dead_mask), target - recon, state.dead_mask,
                                      dead_count=state.dead_count)
        return LossOutput(
            total=sum_parts(parts),
            parts=parts,
            x_hat=recon / self.input_scale,
            fired=code.fired(code.values),
            l0=(code.values > 0).sum().to(pre.dtype) / code.batch,
        )
