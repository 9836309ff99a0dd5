"""Neurons versus features for `mlp_hidden` hooks, where the neuron basis is privileged.

The spread of a vector over coordinates is measured by its participation ratio PR(w) = (Σ w²)² / Σ w⁴, the
effective number of coordinates it uses (1 for a one-hot vector, n for a uniform one).
  - neurons per latent = PR of the latent's unit decoder row over the d_mlp neurons;
  - latents per neuron = PR of the neuron's column of the unit-row decoder over the d_sae latents.
"""

from __future__ import annotations

import torch

NEURON_DEFINITION = (
    "neurons_per_latent = participation ratio (sum w^2)^2/sum w^4 of a latent's unit decoder row over neurons; "
    "latents_per_neuron = the same over a neuron's decoder column; purity/AUROC are computed identically in the "
    "neuron basis (raw mlp_hidden activations) and the SAE basis."
)


def participation_ratio(w: torch.Tensor, dim: int) -> torch.Tensor:
    sq = w.double().square()
    return sq.sum(dim).square() / sq.square().sum(dim).clamp(min=1e-300)


def neuron_loadings(w_dec: torch.Tensor) -> dict:
    w = w_dec.detach().double().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    per_latent = participation_ratio(w, 1).numpy()
    per_neuron = participation_ratio(w, 0).numpy()
    return {
        "neurons_per_latent": per_latent,
        "latents_per_neuron": per_neuron,
        "mean_neurons_per_latent": float(per_latent.mean()),
        "mean_latents_per_neuron": float(per_neuron.mean()),
    }
