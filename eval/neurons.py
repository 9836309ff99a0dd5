"""Neurons versus features, where the neuron basis is privileged: an SAE of an `mlp_hidden` hook, and a transcoder
of a block's MLP (`mlp_in` or `resid_mid` -> `mlp_out`), whose latents stand in for the MLP's hidden neurons.

Both bases are scored alike (purity and ground-truth AUROC of the raw `mlp_hidden` activations against the
dictionary's latents, `visae.eval.evaluate`). For an `mlp_hidden` SAE the decoder's loadings on the neurons are
also measured. The spread of a vector over coordinates is measured by its participation ratio
PR(w) = (Σ w²)² / Σ w⁴, the effective number of coordinates it uses (1 for a one-hot vector, n for a uniform one).
  - neurons per latent = PR of the latent's unit decoder row over the d_mlp neurons;
  - latents per neuron = PR of the neuron's column of the unit-row decoder over the d_sae latents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from visae.eval.dictionary_hooks import DictionaryHooks

NEURON_DEFINITION = (
    "neurons_per_latent = participation ratio (sum w^2)^2/sum w^4 of a latent's unit decoder row over neurons; "
    "latents_per_neuron = the same over a neuron's decoder column; purity/AUROC are computed identically in the "
    "neuron basis (raw mlp_hidden activations) and the SAE basis. A transcoder of block i's MLP is compared with "
    "blocks.i.mlp_hidden in the same way (purity/AUROC only: its decoder writes the MLP output, not the neurons)."
)
MLP_INPUTS = ("mlp_in", "resid_mid")  # what a transcoder of a block's MLP reads (after or before the pre-norm)


def neuron_hook(hooks: DictionaryHooks) -> str | None:
    """The MLP hidden layer a dictionary's latents are compared with: an `mlp_hidden` SAE's own hook; for a
    transcoder of block i's MLP, blocks.i.mlp_hidden; None for other dictionaries."""
    if hooks.kind == "sae" and hooks.hook.endswith(".mlp_hidden"):
        return hooks.hook
    if hooks.kind != "transcoder":
        return None
    block, _, site_in = hooks.reads[0].rpartition(".")
    if site_in in MLP_INPUTS and hooks.writes[0] == f"{block}.mlp_out":
        return f"{block}.mlp_hidden"
    return None


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
