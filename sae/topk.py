"""TopK SAE (Gao et al. 2024) with AuxK for dead latents.

Loss units (as in sparsify): `fvu` = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the batch, and
`auxk` = aux_coeff * min(n_dead / k_aux, 1) * the same ratio for the residual e = x - x_hat
reconstructed from the k_aux largest pre-activations of dead latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sae.base import SAE, LossOutput, TrainState
from sae.sparse_decode import decode_topk
from sae.sparse_encode import gather_pre_acts


def fraction_unexplained(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Batch FVU: squared error over the squared deviation from the batch mean."""
    total = (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (recon - target).pow(2).sum() / total


def fired_latents(indices: torch.Tensor, values: torch.Tensor, d_sae: int) -> torch.Tensor:
    """bool[d_sae]: latents with a positive value anywhere in the code (no host sync)."""
    hits = torch.zeros(d_sae, dtype=values.dtype, device=values.device)
    hits.index_add_(0, indices.reshape(-1), (values.reshape(-1) > 0).to(values.dtype))
    return hits > 0


def auxk_loss(sae: SAE, pre: torch.Tensor, residual: torch.Tensor, dead_mask: torch.Tensor,
              select: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Reconstruct the (detached) residual from the top-k_aux dead latents; scaled by the dead share.

    `select(indices)` re-attaches chosen pre-activations to autograd when `pre` was computed without it."""
    k_aux = min(sae.cfg.k_aux, sae.cfg.d_sae)
    dead_pre = pre.masked_fill(~dead_mask.to(pre.device), float("-inf"))
    values, indices = dead_pre.topk(k_aux, dim=-1, sorted=False)
    if select is not None:
        values = select(indices)
    recon = decode_topk(values.relu(), indices, sae.W_dec)
    scale = (dead_mask.sum() / k_aux).clamp(max=1.0).to(pre.dtype)
    return sae.cfg.aux_coeff * scale * fraction_unexplained(residual.detach(), recon)


class TopKSAE(SAE):
    """Keep the k largest pre-activations per token (then ReLU); unit-norm decoder rows."""

    architecture = "topk"

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values [B, k], indices [B, k]) of the code of raw inputs x [B, d_in]."""
        return self.topk_code(self.pre_acts(x))

    def topk_code(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return values.relu(), indices

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = self.topk_code(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode_sparse(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the input's units from a TopK code, without a dense [B, d_sae] matmul."""
        return (decode_topk(values, indices, self.W_dec) + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_sparse(*self.encode_sparse(x))

    def export_extra(self):
        exported = super().export_extra()
        exported.cfg = {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}
        return exported

    def training_losses(self, x: torch.Tensor, state: TrainState) -> LossOutput:
        # Pre-activations without autograd; only the kept ones are re-attached (sparse backward).
        target = self.scale_input(x)
        x_in = target - self.b_dec if self.cfg.apply_b_dec_to_input else target
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_in, self.W_enc)

        def select(idx: torch.Tensor) -> torch.Tensor:
            return gather_pre_acts(x_in, self.W_enc, self.b_enc, pre, idx)

        indices = pre.topk(self.cfg.k, dim=-1, sorted=False).indices
        values = select(indices).relu()
        recon = decode_topk(values, indices, self.W_dec) + self.b_dec
        parts = {"fvu": fraction_unexplained(target, recon)}
        if state.dead_mask is not None:
            parts["auxk"] = auxk_loss(self, pre, target - recon, state.dead_mask, select)
        return LossOutput(
            total=sum(parts.values()),
            parts=parts,
            x_hat=recon / self.input_scale,
            fired=fired_latents(indices, values, self.cfg.d_sae),
            l0=(values > 0).sum(-1).to(pre.dtype).mean(),
        )
