"""The shared base of every SAE architecture: parameters, input scaling, initialisation from data,
decoder-norm handling, and saving/loading in SAELens's format (docs/dictionary-formats.md).

Architectures subclass `SAE`, set `architecture` and declare their `traits`, and register themselves by
doing so (`sae.registry`); `create_sae(cfg)` builds the right one. Training-time inputs are scaled by
the scalar `input_scale` (E||x|| = sqrt(d_in)); `save` folds it into the weights, so a saved SAE takes raw
activations and `input_scale` of a loaded SAE is 1.

The same base serves dictionaries that read one hook and predict another (transcoders, `sae.transcoder`) and
dictionaries over several hooks (crosscoders, `sae.crosscoder`). The trainer hands every dictionary the loader's
*batch*, the rows of all the hooks it reads side by side; `split_batch` says which part is encoded and which is
reconstructed (for an SAE both are the batch), `scale_target` scales the reconstructed part, and `latent_free`
is the part of a (scaled) reconstruction that does not go through the latents (b_dec, and a skip term).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from visae.sae.config import SAEConfig
from visae.sae.file_format import read_sae_folder, write_sae_folder
from visae.sae.registry import ArchitectureTraits, architecture_class, register

if TYPE_CHECKING:
    from jaxtyping import Bool, Float

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class TrainState:
    """What the trainer tells the SAE each step. `sparsity_scale` is the sparsity-penalty warm-up
    factor in [0, 1]; `dead_mask` marks latents that have not fired for the dead window (AuxK), and
    `dead_count` is how many were dead when the trainer last counted (AuxK selects at most that many:
    the rest of its k_aux picks would be live latents at -inf, costly zeros)."""

    sparsity_scale: float = 1.0
    dead_mask: Bool[Tensor, " d_sae"] | None = None
    step: int = 0
    dead_count: int | None = None


@dataclass
class LossOutput:
    """`total` is the sum of the (already weighted) `parts`. `x_hat` is in the input's units,
    `fired` marks the latents active on at least one token of the batch, `l0` is a 0-d tensor."""

    total: Float[Tensor, ""]
    parts: dict[str, Float[Tensor, ""]]
    x_hat: Float[Tensor, "batch d_in"]
    fired: Bool[Tensor, " d_sae"]
    l0: Float[Tensor, ""]


def sum_parts(parts: dict[str, Float[Tensor, ""]]) -> Float[Tensor, ""]:
    """The total of the (non-empty) loss parts, for `LossOutput.total`."""
    first, *rest = parts.values()
    return sum(rest, first)


@dataclass
class _Exported:
    architecture: str
    tensors: dict[str, torch.Tensor]
    cfg: dict[str, Any] = field(default_factory=dict)


def create_sae(cfg: SAEConfig) -> SAE:
    """Build a freshly initialised SAE of `cfg.architecture`."""
    return architecture_class(cfg.architecture)(cfg)


class SAE(nn.Module, abc.ABC):
    """A sparse autoencoder x -> z = act(W_enc^T (s x - b_dec) + b_enc) -> x_hat = (W_dec^T z + b_dec) / s."""

    architecture: ClassVar[str]
    traits: ClassVar[ArchitectureTraits]
    unit_norm_decoder: ClassVar[bool] = True
    tied_init: ClassVar[bool] = True  # W_enc starts as W_dec^T
    input_scale: Float[Tensor, ""]  # a buffer (registered in __init__)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "architecture" in cls.__dict__:
            register(cls)

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} needs architecture={self.architecture!r}, got {cfg.architecture!r}"
            )
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        d_out = cfg.d_out or cfg.d_in
        W_dec = self._unit_rows(cfg.d_sae, d_out, dtype, self.decoder_init_norm())
        self.W_dec = nn.Parameter(W_dec)
        # W_enc = W_dec^T (Gao et al.), for dictionaries whose input is their output.
        W_enc = W_dec.T if self.tied_init else self._unit_rows(cfg.d_sae, cfg.d_in, dtype, 1.0).T
        self.W_enc = nn.Parameter(W_enc.clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=dtype))
        self.register_buffer("input_scale", torch.ones((), dtype=dtype))

    @staticmethod
    def _unit_rows(rows: int, cols: int, dtype: torch.dtype, norm: float) -> Float[Tensor, "rows cols"]:
        weight = torch.empty(rows, cols, dtype=dtype)
        nn.init.kaiming_uniform_(weight)
        return weight * (norm / weight.norm(dim=1, keepdim=True))

    def decoder_init_norm(self) -> float:
        return 1.0

    # ---- forward -------------------------------------------------------------------------------

    def scale_input(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        return x.to(self.W_enc.dtype) * self.input_scale

    def pre_acts(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Encoder pre-activations of raw inputs x [B, d_in]: one GEMM."""
        x_in = self.scale_input(x)
        if self.cfg.apply_b_dec_to_input:
            x_in = x_in - self.b_dec
        return torch.addmm(self.b_enc, x_in, self.W_enc)

    @abc.abstractmethod
    def activate(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        """Latent activations from pre-activations (inference rule of the architecture)."""

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Dense latent activations z [B, d_sae] of raw inputs x [B, d_in]."""
        return self.activate(self.pre_acts(x))

    def decode_scaled(self, z: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        return z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode(self, z: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        """Reconstruction in the input's units from dense latents z [B, d_sae]."""
        return self.decode_scaled(z) / self.output_scale()

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_in"]:
        return self.decode(self.encode(x))

    @abc.abstractmethod
    def training_losses(self, x: Float[Tensor, "batch d_batch"], state: TrainState) -> LossOutput:
        """The training loss of a loader batch (see `split_batch`) as named parts (their sum is `total`), for the
        generic trainer."""

    # ---- what a loader batch holds -------------------------------------------------------------

    def split_batch(self, batch: Float[Tensor, "batch d_batch"]) -> tuple[Float[Tensor, "batch d_in"],
                                                                            Float[Tensor, "batch d_out"]]:
        """(the input the dictionary encodes, the target it reconstructs), raw, of a loader batch: an SAE's
        batch is both."""
        return batch, batch

    def output_scale(self) -> Float[Tensor, ""]:
        """The scale of reconstructions (a transcoder's output hook has its own)."""
        return self.input_scale

    def scale_target(self, target: Float[Tensor, "batch d_out"]) -> Float[Tensor, "batch d_out"]:
        return target.to(self.W_dec.dtype) * self.output_scale()

    def latent_free(self, scaled_in: Float[Tensor, "batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """The part of the scaled reconstruction of scaled inputs that does not go through the latents."""
        return self.b_dec

    def forward_with_latents(self, x: Float[Tensor, "batch d_in"]) -> tuple[Float[Tensor, "batch d_out"],
                                                                              Float[Tensor, "batch d_sae"]]:
        """(reconstruction, dense latents) of raw inputs, for evaluations that need both."""
        z = self.encode(x)
        return self.decode(z), z

    def hook_slices(self) -> list[slice]:
        """Where each hook's values sit in a reconstruction (several for a crosscoder)."""
        return [slice(0, self.W_dec.shape[1])]

    # ---- initialisation and optimiser hooks ----------------------------------------------------

    @torch.no_grad()
    def init_from_data(self, batch: Float[Tensor, "batch d_batch"], mean_norms: Sequence[float] | None = None) -> None:
        """Set the input scale (E||x|| = sqrt(d_in), from `mean_norms` (one per hook the batch holds: E||x|| over
        the store) or the sample) and b_dec (the scaled target's mean or geometric median, per `cfg.b_dec_init`)."""
        if self.cfg.normalize_activations == "expected_average_only_in":
            self.set_scales(batch, mean_norms)
        centre = self.scale_target(self.split_batch(batch)[1])
        self.b_dec.copy_(centre.mean(0) if self.cfg.b_dec_init == "mean" else geometric_median(centre))

    @torch.no_grad()
    def set_scales(self, batch: Float[Tensor, "batch d_batch"], mean_norms: Sequence[float] | None) -> None:
        """Set the scale(s) that bring each hook to E||x|| = sqrt(d) (see `init_from_data`)."""
        x = self.split_batch(batch)[0].to(self.W_enc.dtype)
        self.input_scale.fill_(unit_scale(x, mean_norms[0] if mean_norms else None))

    @torch.no_grad()
    def after_backward(self) -> None:
        """Remove the gradient component parallel to each unit-norm decoder row (call before the optimiser step)."""
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * rows).sum(1, keepdim=True) * rows

    def calibrate(self, batches: Iterable[Float[Tensor, "batch d_in"]]) -> None:
        """Fit inference-only statistics to the final weights on raw batches (after training; most
        architectures have none)."""

    @torch.no_grad()
    def after_step(self) -> None:
        """Project decoder rows back to unit norm (call after the optimiser step)."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ---- saving and loading ----------------------------------------------------------------------

    def export_extra(self) -> _Exported:
        """The inference form of this SAE in SAELens terms (subclasses add tensors and cfg keys)."""
        return _Exported(self.traits.saved_as or self.architecture, {})

    @torch.no_grad()
    def inference_tensors(self) -> _Exported:
        """Weights with the input (and output) scale folded in, plus architecture-specific tensors."""
        s, out = self.input_scale, self.output_scale()
        exported = self.export_extra()
        exported.tensors = {
            "W_enc": self.W_enc * s,
            "b_enc": self.b_enc.clone(),
            "W_dec": self.W_dec / out,
            "b_dec": self.b_dec / out,
            **exported.tensors,
        }
        return exported

    @classmethod
    def file_shapes(cls, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Tensor keys and shapes a saved folder of this architecture holds, from its cfg.json (read before the
        weights; `sae.file_format` refuses a folder that disagrees)."""
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
        shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        return shapes | {name: (d_sae,) for name in cls.traits.extra_tensors}

    def save_metadata(self, sparsity: Float[Tensor, " d_sae"] | None) -> dict[str, Any]:
        """What `save` adds to the metadata: the scale folded into the weights (and a crosscoder's hook profile)."""
        return {"input_scale_folded": float(self.input_scale)}

    def extra_files(self) -> dict[str, dict[str, Tensor]]:
        """Further safetensors files `save` writes into the folder (a crosscoder's hook profile), by name."""
        return {}

    def save(self, path: str | Path, sparsity: Float[Tensor, " d_sae"] | None = None) -> Path:
        """Write cfg.json + sae_weights.safetensors (+ sparsity.safetensors, log10 firing frequency, and any
        `extra_files`) atomically."""
        exported = self.inference_tensors()
        training_cfg = {k: v for k, v in self.cfg.to_dict().items() if k != "metadata"}
        cfg = {
            "architecture": exported.architecture,
            "d_in": self.cfg.d_in,
            "d_sae": self.cfg.d_sae,
            "dtype": self.cfg.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": self.cfg.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
            **exported.cfg,
            "metadata": {
                # The cfg.json layout generation of SAELens this file follows (read by SAELens's loader).
                "sae_lens_version": "6.0.0",
                **self.cfg.metadata,
                "visae_training_config": training_cfg,
                **self.save_metadata(sparsity),
            },
        }
        return write_sae_folder(path, cfg, exported.tensors, sparsity, self.extra_files())

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SAE:
        """Load a folder in SAELens format (written by visae or SAELens)."""
        cfg_dict, tensors = read_sae_folder(path)
        sae_cls = architecture_class(cfg_dict["architecture"])
        cfg = sae_config_from_file(cfg_dict)
        sae = sae_cls(cfg)
        sae.load_inference_tensors(fold_file_conventions(cfg_dict, tensors))
        return sae.to(device)

    @torch.no_grad()
    def load_inference_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(self, name).copy_(tensors[name])

    @classmethod
    def from_pretrained(cls, release_or_repo_id: str, sae_id: str, **kwargs) -> SAE:
        """Download (through the Hub cache) and load one SAE of a registry release or `org/name` repo."""
        from visae.sae.hub import download_sae  # the Hub client is imported only when used

        return cls.load(download_sae(release_or_repo_id, sae_id, **kwargs))


def unit_scale(x: Float[Tensor, "batch d"], mean_norm: float | None) -> float:
    """The scalar that brings E||x|| to sqrt(d): from `mean_norm` (E||x|| over the store) or the sample x."""
    norm = float(mean_norm) if mean_norm is not None else float(x.norm(dim=-1).mean())
    if not norm > 0:
        raise ValueError(f"cannot normalise inputs with mean norm {norm}; the activation sample is all zeros")
    return math.sqrt(x.shape[-1]) / norm


def sae_config_from_file(cfg_dict: dict[str, Any]) -> SAEConfig:
    """SAEConfig of a loaded file: shape keys from cfg.json, training parameters from visae's metadata if present."""
    metadata = dict(cfg_dict.get("metadata") or {})
    known = {f.name for f in fields(SAEConfig)}
    training = {k: v for k, v in (metadata.get("visae_training_config") or {}).items() if k in known}
    training.update(
        architecture=cfg_dict["architecture"],
        d_in=int(cfg_dict["d_in"]),
        d_sae=int(cfg_dict["d_sae"]),
        dtype=cfg_dict.get("dtype", "float32"),
        apply_b_dec_to_input=bool(cfg_dict.get("apply_b_dec_to_input", True)),
        normalize_activations="none",
        metadata=metadata,
    )
    if "k" in cfg_dict:
        training["k"] = int(cfg_dict["k"])
    if "d_out" in cfg_dict:
        training["d_out"] = int(cfg_dict["d_out"])
    if "hook_dims" in cfg_dict:
        training["hook_dims"] = [int(d) for d in cfg_dict["hook_dims"]]
    return SAEConfig(**training)


@torch.no_grad()
def fold_file_conventions(cfg_dict: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold SAELens TopK's `rescale_acts_by_decoder_norm` into plain weights (same outputs)."""
    if not cfg_dict.get("rescale_acts_by_decoder_norm"):
        return tensors
    norms = tensors["W_dec"].norm(dim=1)
    return {
        **tensors,
        "W_enc": tensors["W_enc"] * norms,
        "b_enc": tensors["b_enc"] * norms,
        "W_dec": tensors["W_dec"] / norms[:, None],
    }


@torch.no_grad()
def geometric_median(x: Float[Tensor, "batch d_in"], iters: int = 50, tol: float = 1e-6) -> Float[Tensor, " d_in"]:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to the rows of x."""
    median = x.mean(0)
    for _ in range(iters):
        weights = 1.0 / (x - median).norm(dim=1).clamp_min(1e-8)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= tol * median.norm().clamp_min(1e-12):
            return new
        median = new
    return median
