"""TopK SAE (Gao et al. 2024) with AuxK for dead latents.

Loss units (as in sparsify): `fvu` = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch, and
`auxk` = aux_coeff * min(n_dead / k_aux, 1) * the same ratio for the residual e = x - x_hat
reconstructed from the k_aux largest pre-activations of dead latents (see `auxk_loss` for the two ways
visae's AuxK differs from Gao et al.'s, so that it cannot trap the latents it is meant to revive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from visae.sae.base import SAE, LossOutput, TrainState, sum_parts
from visae.sae.kernels.scratch import scratch
from visae.sae.kernels.sparse_code import SparseCode
from visae.sae.kernels.sparse_decode import decode_code, decode_topk
from visae.sae.kernels.sparse_encode import gather_pre_acts
from visae.sae.kernels.topk_select import topk_indices
from visae.sae.registry import ArchitectureTraits, Recipe

if TYPE_CHECKING:
    from jaxtyping import Bool, Float, Int


def fraction_unexplained(target: Float[Tensor, "batch d_in"], recon: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
    """Batch FVU: squared error over the squared deviation from the batch mean."""
    total = (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (recon - target).pow(2).sum() / total


def auxk_loss(sae: SAE, dead_pre: Float[Tensor, "batch d_sae"], residual: Float[Tensor, "batch d_in"],
              dead_mask: Bool[Tensor, " d_sae"], select: Callable[[SparseCode], Float[Tensor, " nnz"]] | None = None,
              dead_count: int | None = None) -> Float[Tensor, ""]:
    """Reconstruct the (detached) residual from the top-k_aux dead latents; scaled by the dead share.

    `dead_pre` are the pre-activations with live latents at -inf (see `mask_live`). `select(code)`
    re-attaches the chosen pre-activations to autograd when they were computed without it. With
    `dead_count`, at most that many latents are selected (see `TrainState.dead_count`).

    Two changes to Gao et al.'s AuxK keep it from killing the latents it should revive (docs/logbook.md,
    entry 5). The ReLU on the selected values is straight-through: a dead latent whose pre-activations are
    negative on every token still gets AuxK's gradient, which raises it when its decoder row points along the
    residual. And when the sum of hundreds of dead latents overshoots the small residual, the auxiliary
    reconstruction is scaled back to it by the least-squares factor (held constant in the backward pass), so
    that its gradient no longer pushes every one of them below zero at once."""
    k_aux = min(sae.cfg.k_aux, sae.cfg.d_sae)
    picks = min(k_aux, dead_count) if dead_count else k_aux
    code = SparseCode.from_topk(topk_indices(dead_pre, picks), sae.cfg.d_sae)
    values = code.gather(dead_pre) if select is None else select(code)
    values = values.masked_fill(~torch.isfinite(values.detach()), 0.0)  # live latents picked when too few are dead
    recon = decode_code(straight_through_relu(values), code, sae.W_dec)
    target = residual.detach()
    scale = (dead_mask.sum() / k_aux).clamp(max=1.0).to(dead_pre.dtype)
    return sae.cfg.aux_coeff * scale * fraction_unexplained(target, recon * overshoot_scale(target, recon))


def straight_through_relu(values: Float[Tensor, " nnz"]) -> Float[Tensor, " nnz"]:
    """ReLU in the forward pass, the identity in the backward pass."""
    return values + (values.relu() - values).detach()


def overshoot_scale(target: Float[Tensor, "batch d"], recon: Float[Tensor, "batch d"]) -> Float[Tensor, ""]:
    """The least-squares factor that brings `recon` back to `target` when it overshoots along it (a factor in
    (0, 1)); else 1, so a reconstruction pointing away from the target keeps its whole gradient. No gradient."""
    with torch.no_grad():
        factor = (target * recon).sum() / recon.pow(2).sum().clamp_min(1e-12)
        return torch.where((factor > 0) & (factor < 1), factor, torch.ones_like(factor))


def mask_live(pre: Float[Tensor, "*batch d_sae"], dead_mask: Bool[Tensor, " d_sae"],
              in_place: bool = False) -> Float[Tensor, "*batch d_sae"]:
    """Pre-activations with every live (not dead) latent set to -inf, for AuxK's selection."""
    live = ~dead_mask.to(pre.device)
    return pre.masked_fill_(live, float("-inf")) if in_place else pre.masked_fill(live, float("-inf"))


class PreActs(NamedTuple):
    """What a sparse training step of the TopK family starts from (`detached_pre_acts`)."""

    scaled_in: Float[Tensor, "batch d_in"]  # the scaled input (what `latent_free` reads)
    target: Float[Tensor, "batch d_out"]  # the scaled reconstruction target
    pre: Float[Tensor, "batch d_sae"]  # pre-activations, without autograd, in reused memory
    select: Callable[[SparseCode], Float[Tensor, " nnz"]]  # the code's pre-activations, attached to autograd


def detached_pre_acts(sae: SAE, batch: Float[Tensor, "batch d_batch"]) -> PreActs:
    """The start of a sparse training step of the TopK family on a loader batch (`SAE.split_batch`).

    The pre-activations are computed without autograd into reused memory (`sae.kernels.scratch`: the next
    step overwrites them); `select(code)` re-attaches the code's pre-activations to the graph, with a
    sparse backward (`sae.kernels.sparse_encode`)."""
    x, x_target = sae.split_batch(batch)
    scaled_in = sae.scale_input(x)
    target = scaled_in if x_target is x else sae.scale_target(x_target)
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    with torch.no_grad():
        x_in = scaled_in - sae.b_dec if b_dec is not None else scaled_in
        pre = torch.addmm(sae.b_enc, x_in, sae.W_enc,
                          out=scratch((x.shape[0], sae.cfg.d_sae), sae.W_enc.dtype, x.device))

    def select(code: SparseCode) -> Float[Tensor, " nnz"]:
        return gather_pre_acts(x_in, sae.W_enc, sae.b_enc, pre, code, b_dec)

    return PreActs(scaled_in, target, pre, select)


# The anchors' base LR (2e-4 at 2^14 latents). The TopK family's SAEs train at 4x it (docs/logbook.md, entry 2),
# decay it over the last half of the run and count a latent dead after 5% of the budget without firing (entry 6:
# latents that stop firing while the LR is high come back as it decays), which lets Adam's beta2 be 0.99: a
# second-moment horizon of 100 steps, not 1,000, which at 250-1,000 steps no longer keeps the later steps as
# small as the first ones (entries 5 and 6). Transcoders and crosscoders keep the anchors' LR and schedule: at
# 4x they lost latents that AuxK could not revive (entry 3).
ANCHOR_TOPK_LR = 2e-4
ANCHOR_RECIPE = Recipe(base_lr=ANCHOR_TOPK_LR, adam_betas=(0.9, 0.999), lr_decay=0.2, dead_window=0.1)
TOPK_SAE_RECIPE = Recipe(base_lr=4 * ANCHOR_TOPK_LR, adam_betas=(0.9, 0.99), lr_decay=0.5, dead_window=0.05)


class TopKSAE(SAE):
    """Keep the k largest pre-activations per token (then ReLU); unit-norm decoder rows."""

    architecture = "topk"
    traits = ArchitectureTraits(sparsity="k", lr_scales_with_d_in=True, sparsity_warmup=0.0, **TOPK_SAE_RECIPE)

    def encode_sparse(self, x: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, "batch k"], Int[Tensor, "batch k"]]:
        """(values [B, k], indices [B, k]) of the code of raw inputs x [B, d_in]."""
        return self.topk_code(self.pre_acts(x))

    def topk_code(self, pre: Float[Tensor, "batch d_sae"]) -> tuple[Float[Tensor, "batch k"], Int[Tensor, "batch k"]]:
        indices = topk_indices(pre, self.cfg.k)
        return pre.gather(1, indices).relu(), indices

    def activate(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        values, indices = self.topk_code(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode_sparse(self, values: Float[Tensor, "batch k"],
                      indices: Int[Tensor, "batch k"]) -> Float[Tensor, "batch d_in"]:
        """Reconstruction in the input's units from a TopK code, without a dense [B, d_sae] matmul."""
        return (decode_topk(values, indices, self.W_dec) + self.b_dec) / self.output_scale()

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_in"]:
        return self.decode_sparse(*self.encode_sparse(x))

    def export_extra(self):
        exported = super().export_extra()
        exported.cfg = {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}
        return exported

    def reconstruction_loss(self, target: Float[Tensor, "batch d_out"],
                            recon: Float[Tensor, "batch d_out"]) -> Float[Tensor, ""]:
        """The `fvu` loss part (a crosscoder averages it over its hooks)."""
        return fraction_unexplained(target, recon)

    def sparsity_parts(self, values: Float[Tensor, " nnz"], code: SparseCode,
                       state: TrainState) -> dict[str, Float[Tensor, ""]]:
        """Loss parts on the code besides TopK's own sparsity (none; a crosscoder's optional penalty)."""
        return {}

    def training_losses(self, x: Float[Tensor, "batch d_batch"], state: TrainState) -> LossOutput:
        step = detached_pre_acts(self, x)
        code = SparseCode.from_topk(topk_indices(step.pre, self.cfg.k), self.cfg.d_sae)
        values = step.select(code).relu()
        recon = decode_code(values, code, self.W_dec) + self.latent_free(step.scaled_in)
        parts = {"fvu": self.reconstruction_loss(step.target, recon), **self.sparsity_parts(values, code, state)}
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
            l0=(values > 0).sum().to(step.pre.dtype) / x.shape[0],
        )
