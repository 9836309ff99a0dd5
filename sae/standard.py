"""ReLU SAE with an L1 penalty weighted by decoder-row norm (Anthropic, April 2024 update).

No decoder-norm constraint; decoder rows start at norm `decoder_init_norm` (0.1). Loss units:
`mse` = mean over tokens of ||x - x_hat||^2 (summed over dimensions) on inputs scaled to
E||x|| = sqrt(d_in), and `l1` = sparsity_scale * l1_coeff * mean over tokens of sum_i z_i ||W_dec,i||.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from visae.sae.base import SAE, LossOutput, TrainState, sum_parts
from visae.sae.registry import ArchitectureTraits

if TYPE_CHECKING:
    from jaxtyping import Float


def squared_error(target: Float[Tensor, "*batch d_in"], recon: Float[Tensor, "*batch d_in"]) -> Float[Tensor, ""]:
    """Mean over tokens of the squared error summed over dimensions."""
    return (recon - target).pow(2).sum(-1).mean()


class StandardSAE(SAE):
    architecture = "standard"
    traits = ArchitectureTraits(sparsity="l1_coeff", base_lr=5e-5, lr_scales_with_d_in=False, sparsity_warmup=0.05)
    unit_norm_decoder = False

    def decoder_init_norm(self) -> float:
        return self.cfg.decoder_init_norm

    def activate(self, pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        return pre.relu()

    def training_losses(self, x: Float[Tensor, "batch d_batch"], state: TrainState) -> LossOutput:
        x_in, x_target = self.split_batch(x)
        target = self.scale_target(x_target)
        z = self.encode(x_in)
        recon = z.to(self.W_dec.dtype) @ self.W_dec + self.latent_free(self.scale_input(x_in))
        weighted = z * self.W_dec.norm(dim=1)
        parts = {
            "mse": squared_error(target, recon),
            "l1": state.sparsity_scale * self.cfg.l1_coeff * weighted.sum(-1).mean(),
        }
        active = z > 0
        return LossOutput(
            total=sum_parts(parts),
            parts=parts,
            x_hat=recon / self.output_scale(),
            fired=active.any(0),
            l0=active.sum(-1).to(z.dtype).mean(),
        )


