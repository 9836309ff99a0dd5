"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - threshold), trained with a
straight-through estimator (rectangle kernel of width `bandwidth`) and an L0 penalty.

The paper's hyper-parameters (bandwidth 0.001, threshold init 0.001, L0 coefficient) are for inputs
with E||x||^2 = 1. visae scales inputs to E||x|| = sqrt(d_in), so thresholds and bandwidth are
multiplied by sqrt(d_in) and the reconstruction term is divided by d_in: the loss equals the paper's.
Loss parts: `mse` = mean over tokens of ||x - x_hat||^2 / d_in, `l0` = sparsity_scale * l0_coeff * L0.
Decoder rows are kept at unit norm.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from visae.sae.base import SAE, LossOutput, TrainState, sum_parts
from visae.sae.registry import ArchitectureTraits
from visae.sae.standard import squared_error

if TYPE_CHECKING:
    from jaxtyping import Float


def _rectangle(u: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """pre * H(pre - threshold); gradient to pre where active, pseudo-gradient to threshold."""

    @staticmethod
    def forward(ctx, pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"],
                bandwidth: float) -> Float[Tensor, "batch d_sae"]:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(
        ctx, grad_out: Float[Tensor, "batch d_sae"]
    ) -> tuple[Float[Tensor, "batch d_sae"], Float[Tensor, " d_sae"], None]:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = (pre > threshold).to(pre.dtype) * grad_out
        grad_threshold = (-(threshold / bw) * _rectangle((pre - threshold) / bw) * grad_out).sum(0)
        return grad_pre, grad_threshold, None


class StepFunction(torch.autograd.Function):
    """H(pre - threshold) with a pseudo-gradient to threshold only (for the L0 penalty)."""

    @staticmethod
    def forward(ctx, pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"],
                bandwidth: float) -> Float[Tensor, "batch d_sae"]:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Float[Tensor, "batch d_sae"]) -> tuple[None, Float[Tensor, " d_sae"], None]:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_threshold = (-(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad_out).sum(0)
        return None, grad_threshold, None


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    traits = ArchitectureTraits(sparsity="l0_coeff", base_lr=2e-4, lr_scales_with_d_in=False, sparsity_warmup=0.05,
                                adam_betas=(0.0, 0.999), extra_tensors=("threshold",))

    def __init__(self, cfg):
        super().__init__(cfg)
        init = cfg.jumprelu_init_threshold * self.unit_scale()
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(init), dtype=self.W_enc.dtype))

    def unit_scale(self) -> float:
        """How much larger visae's scaled inputs are than the paper's E||x||^2 = 1 convention."""
        return math.sqrt(self.cfg.d_in)

    @property
    def threshold(self) -> Float[Tensor, " d_sae"]:
        return self.log_threshold.exp()

    def activate(self, pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        return pre * (pre > self.threshold).to(pre.dtype)

    def export_extra(self):
        exported = super().export_extra()
        exported.tensors = {"threshold": self.threshold.detach().clone()}
        return exported

    @torch.no_grad()
    def load_inference_tensors(self, tensors):
        super().load_inference_tensors(tensors)
        self.log_threshold.copy_(tensors["threshold"].clamp_min(0).log())

    def training_losses(self, x: Float[Tensor, "batch d_batch"], state: TrainState) -> LossOutput:
        x_in, x_target = self.split_batch(x)
        scaled_in = self.scale_input(x_in)
        target = self.scale_target(x_target)
        pre = self.pre_acts(x_in)
        bandwidth = self.cfg.jumprelu_bandwidth * self.unit_scale()
        threshold = self.threshold
        z = JumpReLUFunction.apply(pre, threshold, bandwidth)
        recon = z.to(self.W_dec.dtype) @ self.W_dec + self.latent_free(scaled_in)
        l0 = StepFunction.apply(pre, threshold, bandwidth).sum(-1).mean()
        parts = {
            "mse": squared_error(target, recon) / target.shape[-1],
            "l0": state.sparsity_scale * self.cfg.l0_coeff * l0,
        }
        active = z != 0
        return LossOutput(
            total=sum_parts(parts),
            parts=parts,
            x_hat=recon / self.output_scale(),
            fired=active.any(0),
            l0=l0.detach(),
        )
