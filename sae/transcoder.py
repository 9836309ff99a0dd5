"""Transcoders: dictionaries that read one hook and predict another, usually a block's `mlp_in` -> `mlp_out`:

    x_out ≈ W_dec^T act(W_enc^T x_in + b_enc) + b_dec            (transcoder)
    x_out ≈ W_dec^T act(W_enc^T x_in + b_enc) + b_dec + W_skip x_in   (skip transcoder; W_skip starts at zero)

saved in SAELens's transcoder format (docs/dictionary-formats.md): cfg.json adds `d_out`, `W_dec` is
[d_sae, d_out], `b_dec` [d_out], `W_skip` [d_out, d_in], and `apply_b_dec_to_input` is false (b_dec lives on the
output side). The activation comes from the SAE architecture each variant is built on, with its own loss, so
every architecture's training code (the sparse TopK path, AuxK, BatchTopK's threshold) serves its transcoder:

- `topk_transcoder`, `topk_skip_transcoder`: TopK; saved under the same names with `k` (SAELens loads them
  after `sae.sae_lens_transcoders.register()`);
- `batchtopk_transcoder`, `batchtopk_skip_transcoder`: BatchTopK; saved as `jumprelu_transcoder` and
  `jumprelu_skip_transcoder` with the inference threshold (SAELens's convention, as for BatchTopK SAEs);
- `jumprelu_transcoder`, `jumprelu_skip_transcoder`: JumpReLU (SAELens's own names);
- `transcoder`, `skip_transcoder`: ReLU with the `standard` L1 penalty (SAELens's own names).

A loader batch holds the input hook's values then the output hook's, side by side (`split_batch`). Inputs and
outputs are each scaled to E||x|| = sqrt(d) during training (`input_scale`, `target_scale`); both are folded into
the saved weights. Since b_dec cannot centre the input, `init_from_data` centres the initial pre-activations
through b_enc instead (b_enc = -mean(scaled x_in) W_enc), which is what an SAE's b_dec subtraction does at the
start; from then on b_enc is trained freely.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from visae.sae.base import SAE, unit_scale
from visae.sae.batchtopk import BatchTopKSAE
from visae.sae.jumprelu import JumpReLUSAE
from visae.sae.standard import StandardSAE
from visae.sae.topk import ANCHOR_RECIPE, TopKSAE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jaxtyping import Float


class Transcoder(SAE):
    """What every transcoder adds to its activation's SAE class (registered only through the subclasses below).

    The encoder starts with directions of its own, not W_dec^T: input and output are different spaces. On the toy
    model's block-2 MLP (4M tokens, k 32, 16x) this gave FVU 0.0065 with 0.8% dead latents, against 0.0081 and 1.3%
    for W_enc = W_dec^T."""

    target_scale: Float[Tensor, ""]  # a buffer (registered in __init__)
    tied_init = False

    def __init__(self, cfg):
        if cfg.apply_b_dec_to_input:
            raise ValueError(f"a {cfg.architecture} has b_dec on its output side and cannot subtract it from its "
                             "input; set apply_b_dec_to_input=False")
        super().__init__(cfg)
        self.register_buffer("target_scale", torch.ones((), dtype=self.W_enc.dtype))

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    def split_batch(self, batch: Float[Tensor, "batch d_batch"]) -> tuple[Float[Tensor, "batch d_in"],
                                                                            Float[Tensor, "batch d_out"]]:
        d_in = self.cfg.d_in
        if batch.shape[-1] != d_in + self.d_out:
            raise ValueError(f"a transcoder's batch holds its input hook then its output hook side by side "
                             f"({d_in} + {self.d_out} values a token), got {batch.shape[-1]}")
        return batch[:, :d_in], batch[:, d_in:]

    def output_scale(self) -> Float[Tensor, ""]:
        return self.target_scale

    @torch.no_grad()
    def init_from_data(self, batch: Float[Tensor, "batch d_batch"], mean_norms: Sequence[float] | None = None) -> None:
        """As an SAE's (`mean_norms`: E||x_in||, E||x_out|| over the store), then b_enc centring the first
        pre-activations."""
        super().init_from_data(batch, mean_norms)
        self.b_enc.copy_(-(self.scale_input(self.split_batch(batch)[0]).mean(0) @ self.W_enc))

    @torch.no_grad()
    def set_scales(self, batch: Float[Tensor, "batch d_batch"], mean_norms: Sequence[float] | None) -> None:
        """Inputs and outputs each to E||x|| = sqrt(d)."""
        super().set_scales(batch, mean_norms)
        target = self.split_batch(batch)[1].to(self.W_enc.dtype)
        self.target_scale.fill_(unit_scale(target, mean_norms[1] if mean_norms else None))

    def save_metadata(self, sparsity: Float[Tensor, " d_sae"] | None) -> dict[str, Any]:
        return {**super().save_metadata(sparsity), "output_scale_folded": float(self.target_scale)}

    def export_extra(self):
        exported = super().export_extra()
        exported.cfg["d_out"] = self.d_out
        return exported

    @classmethod
    def file_shapes(cls, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        if "d_out" not in cfg:
            raise ValueError(f"a {cfg['architecture']} cfg.json needs `d_out`, the width of the hook it predicts")
        d_sae, d_out = int(cfg["d_sae"]), int(cfg["d_out"])
        return {**super().file_shapes(cfg), "W_dec": (d_sae, d_out), "b_dec": (d_out,)}


class SkipTranscoder(Transcoder):
    """A transcoder plus a linear skip term W_skip x_in (initialised to zero)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.W_skip = nn.Parameter(torch.zeros(self.d_out, cfg.d_in, dtype=self.W_enc.dtype))

    def latent_free(self, scaled_in: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        return torch.addmm(self.b_dec, scaled_in, self.W_skip.T)

    def skip(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        """The skip term in the output's units, of raw inputs."""
        return self.scale_input(x) @ self.W_skip.T / self.output_scale()

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        return super().forward(x) + self.skip(x)

    def forward_with_latents(self, x: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, "batch d_out"],
                                                                              Float[Tensor, "batch d_sae"]]:
        x_hat, z = super().forward_with_latents(x)
        return x_hat + self.skip(x), z

    @torch.no_grad()
    def export_extra(self):
        exported = super().export_extra()
        exported.tensors["W_skip"] = self.W_skip * (self.input_scale / self.output_scale())
        return exported

    @torch.no_grad()
    def load_inference_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_inference_tensors(tensors)
        self.W_skip.copy_(tensors["W_skip"])

    @classmethod
    def file_shapes(cls, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        shapes = super().file_shapes(cfg)
        return {**shapes, "W_skip": (shapes["b_dec"][0], int(cfg["d_in"]))}


def _traits(base: type[SAE], saved_as: str | None = None):
    """The activation's traits as a transcoder's; the TopK family's at the anchors' LR and schedule (ANCHOR_RECIPE)."""
    if base.traits.uses_k:
        return replace(base.traits, kind="transcoder", saved_as=saved_as, **ANCHOR_RECIPE)
    return replace(base.traits, kind="transcoder", saved_as=saved_as)


class TopKTranscoder(Transcoder, TopKSAE):
    architecture = "topk_transcoder"
    traits = _traits(TopKSAE)


class TopKSkipTranscoder(SkipTranscoder, TopKSAE):
    architecture = "topk_skip_transcoder"
    traits = _traits(TopKSAE)


class BatchTopKTranscoder(Transcoder, BatchTopKSAE):
    architecture = "batchtopk_transcoder"
    traits = _traits(BatchTopKSAE, saved_as="jumprelu_transcoder")


class BatchTopKSkipTranscoder(SkipTranscoder, BatchTopKSAE):
    architecture = "batchtopk_skip_transcoder"
    traits = _traits(BatchTopKSAE, saved_as="jumprelu_skip_transcoder")


class JumpReLUTranscoder(Transcoder, JumpReLUSAE):
    architecture = "jumprelu_transcoder"
    traits = _traits(JumpReLUSAE)


class JumpReLUSkipTranscoder(SkipTranscoder, JumpReLUSAE):
    architecture = "jumprelu_skip_transcoder"
    traits = _traits(JumpReLUSAE)


class ReLUTranscoder(Transcoder, StandardSAE):
    architecture = "transcoder"
    traits = _traits(StandardSAE)


class ReLUSkipTranscoder(SkipTranscoder, StandardSAE):
    architecture = "skip_transcoder"
    traits = _traits(StandardSAE)
