"""Crosscoders (Anthropic, "Sparse Crosscoders", 2024): one dictionary over L hooks, the layers of one model or
one hook of several models on the same images. Each hook l has its own encoder and decoder; the latents are shared:

    z = TopK(sum_l W_enc^l x^l + b_enc),    x_hat^l = W_dec^l z + b_dec^l

The hooks sit side by side in a loader batch ([batch, d_1 + ... + d_L], `cfg.hook_dims`), so the encoder is one
GEMM over the stacked W_enc^l and training takes the TopK SAE's sparse path (AuxK included): a crosscoder costs
what an SAE of the stacked width costs. Training departs from a TopK SAE in three ways:

- each hook is scaled to E||x^l|| = sqrt(d_l) (`input_scale` holds one value per hook, repeated over its width);
- the `fvu` loss is the mean of the hooks' FVUs, so a hook with little variance weighs as much as the others;
- optionally (`decoder_norm_l1_coeff` > 0) Anthropic's penalty c * mean over tokens of sum_i z_i sum_l ||W_dec,i^l||,
  which favours latents that live in few hooks; off by default, since TopK sets the sparsity.

Each latent's decoder rows over all hooks together have unit norm (the TopK recipe), so its norm at each hook
(`decoder_norms`, in the training units, where every hook has E||x|| = sqrt(d)) says where it lives: `hook_profile`
summarises the shares of latents exclusive to one hook or shared. The format (docs/dictionary-formats.md) keeps one
encoder, decoder and decoder bias per hook (`W_enc.{l}`, `W_dec.{l}`, `b_dec.{l}`) with the scales folded in; the
b_dec subtraction training applies to its input is folded into b_enc, so the file holds the formula above.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from visae.sae.base import unit_scale
from visae.sae.topk import ANCHOR_RECIPE, TopKSAE, fraction_unexplained

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jaxtyping import Float

    from visae.sae.base import TrainState
    from visae.sae.kernels.sparse_code import SparseCode

# A latent whose decoder norm at one hook is at least this share of its norms summed over hooks is exclusive to it
# (Anthropic's model-diffing threshold: relative norm < 0.1 or > 0.9); any other latent is shared.
EXCLUSIVE_SHARE = 0.9
PROFILE_FILE = "hook_profile.safetensors"
LOG10_NEVER = -9.5  # log10(firing frequency + 1e-10) of a latent that never fired is -10 (`sparsity.safetensors`)


class CrossCoder(TopKSAE):
    """A TopK crosscoder over the hooks of `cfg.hook_dims`, side by side."""

    architecture = "crosscoder"
    traits = replace(TopKSAE.traits, kind="crosscoder", extra_files=(PROFILE_FILE,), **ANCHOR_RECIPE)

    def __init__(self, cfg):
        if not cfg.hook_dims:
            raise ValueError("a crosscoder needs hook_dims, the width of each hook it reads (d_in is their sum)")
        super().__init__(cfg)
        self.register_buffer("input_scale", torch.ones(cfg.d_in, dtype=self.W_enc.dtype))

    def hook_slices(self) -> list[slice]:
        bounds = list(itertools.accumulate(self.cfg.hook_dims, initial=0))
        return [slice(start, stop) for start, stop in itertools.pairwise(bounds)]

    @torch.no_grad()
    def set_scales(self, batch: Float[Tensor, "batch d_in"], mean_norms: Sequence[float] | None) -> None:
        """Each hook to E||x^l|| = sqrt(d_l) (`mean_norms`: each hook's E||x|| over its store)."""
        x = batch.to(self.W_enc.dtype)
        for hook, where in enumerate(self.hook_slices()):
            self.input_scale[where] = unit_scale(x[:, where], mean_norms[hook] if mean_norms else None)

    def reconstruction_loss(self, target: Float[Tensor, "batch d_in"],
                            recon: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
        fvus = [fraction_unexplained(target[:, where], recon[:, where]) for where in self.hook_slices()]
        return torch.stack(fvus).mean()

    def sparsity_parts(self, values: Float[Tensor, " nnz"], code: SparseCode,
                       state: TrainState) -> dict[str, Float[Tensor, ""]]:
        if not self.cfg.decoder_norm_l1_coeff:
            return {}
        summed = torch.stack([self.W_dec[:, where].norm(dim=1) for where in self.hook_slices()]).sum(0)
        penalty = (values * summed[code.latents]).sum() / code.n_rows
        return {"l1": state.sparsity_scale * self.cfg.decoder_norm_l1_coeff * penalty}

    # ---- where each latent lives -----------------------------------------------------------------

    @torch.no_grad()
    def decoder_norms(self) -> Float[Tensor, "d_sae n_hooks"]:
        """Each latent's decoder norm at each hook, in the training units (E||x^l|| = sqrt(d_l) for every hook):
        W_dec's own while training; a loaded crosscoder's raw decoder times the scale folded into it."""
        return torch.stack([self.W_dec[:, where].norm(dim=1) * before
                            for where, before in zip(self.hook_slices(), self._folded())], dim=1).float()

    # ---- saving and loading ------------------------------------------------------------------------

    @torch.no_grad()
    def inference_tensors(self):
        exported = self.export_extra()
        s, W_enc, W_dec = self.input_scale, self.W_enc, self.W_dec
        b_enc = self.b_enc - self.b_dec @ W_enc if self.cfg.apply_b_dec_to_input else self.b_enc.clone()
        exported.tensors = {"b_enc": b_enc}
        for hook, where in enumerate(self.hook_slices()):
            scale = s[where]
            exported.tensors |= {f"W_enc.{hook}": W_enc[where] * scale[:, None],
                                 f"W_dec.{hook}": W_dec[:, where] / scale, f"b_dec.{hook}": self.b_dec[where] / scale}
        exported.cfg |= {"hook_dims": list(self.cfg.hook_dims), "apply_b_dec_to_input": False}
        return exported

    def save_metadata(self, sparsity: Float[Tensor, " d_sae"] | None) -> dict[str, Any]:
        """The hooks' folded scales (times any folded before: a re-saved loaded crosscoder keeps them) and the
        hook profile of the latents that fired in the closing evaluation (all of them without `sparsity`)."""
        live = None if sparsity is None else sparsity > LOG10_NEVER
        return {"hook_scales_folded": [float(self.input_scale[where.start]) * before for where, before in
                                       zip(self.hook_slices(), self._folded())],
                "hook_profile": hook_profile(self.decoder_norms(), self.cfg.metadata.get("hook_names"), live)}

    def extra_files(self) -> dict[str, dict[str, Tensor]]:
        return {PROFILE_FILE: {"decoder_norms": self.decoder_norms()}}

    def _folded(self) -> list[float]:
        return list(self.cfg.metadata.get("hook_scales_folded") or [1.0] * len(self.cfg.hook_dims))

    @torch.no_grad()
    def load_inference_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        n = len(self.cfg.hook_dims)
        self.W_enc.copy_(torch.cat([tensors[f"W_enc.{hook}"] for hook in range(n)]))
        self.W_dec.copy_(torch.cat([tensors[f"W_dec.{hook}"] for hook in range(n)], dim=1))
        self.b_dec.copy_(torch.cat([tensors[f"b_dec.{hook}"] for hook in range(n)]))
        self.b_enc.copy_(tensors["b_enc"])

    @classmethod
    def file_shapes(cls, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        dims, d_sae = [int(d) for d in cfg.get("hook_dims") or []], int(cfg["d_sae"])
        if not dims or sum(dims) != int(cfg["d_in"]):
            raise ValueError(f"a crosscoder cfg.json needs `hook_dims`, the width of each hook, summing to d_in="
                             f"{cfg['d_in']}; got {cfg.get('hook_dims')!r}")
        shapes: dict[str, tuple[int, ...]] = {"b_enc": (d_sae,)}
        for hook, d in enumerate(dims):
            shapes |= {f"W_enc.{hook}": (d, d_sae), f"W_dec.{hook}": (d_sae, d), f"b_dec.{hook}": (d,)}
        return shapes


def hook_profile(norms: Float[Tensor, "d_sae n_hooks"], hooks: Sequence[str] | None = None,
                 live: Tensor | None = None) -> dict[str, Any]:
    """Where the latents live, from their decoder norms at each hook: the share exclusive to each hook (its norm
    there is at least `EXCLUSIVE_SHARE` of the latent's summed norms) and the share shared by several hooks, over
    the `live` latents (all without a mask)."""
    names = list(hooks) if hooks else [str(i) for i in range(norms.shape[1])]
    kept = norms if live is None else norms[live.to(norms.device)]
    share = kept / kept.sum(1, keepdim=True).clamp_min(1e-12)
    n = max(kept.shape[0], 1)
    exclusive = {name: float((share[:, i] >= EXCLUSIVE_SHARE).sum()) / n for i, name in enumerate(names)}
    return {"hooks": names, "n_latents": kept.shape[0], "exclusive_share_threshold": EXCLUSIVE_SHARE,
            "exclusive_fraction": exclusive, "shared_fraction": 1.0 - sum(exclusive.values()),
            "mean_norm_share": {name: float(share[:, i].mean()) if kept.shape[0] else 0.0
                                for i, name in enumerate(names)}}
