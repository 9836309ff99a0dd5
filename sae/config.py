"""The configuration of one sparse autoencoder, shared by every architecture.

Loads from YAML with command-line overrides through the shared `core.config.load_typed_config` (see
`SAEConfig.from_yaml`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Optional

from visae.core.config import load_typed_config
from visae.core.fields import bounds, check_fields
from visae.sae.registry import architecture_traits

NORMALIZATIONS = ("none", "expected_average_only_in")
B_DEC_INITS = ("mean", "geometric_median")


@dataclass
class SAEConfig:
    """Shape, architecture and loss parameters of an SAE.

    `normalize_activations="expected_average_only_in"` means inputs are scaled by one scalar so that
    E||x|| = sqrt(d_in) during training (Anthropic, April 2024); the scalar is folded into the weights
    on save, so a saved SAE takes raw activations and its cfg.json says "none".
    Loss coefficients are in the units documented on each architecture's class.
    """

    architecture: str = "topk"
    d_in: Annotated[int, bounds(ge=1)] = 768
    d_sae: Annotated[int, bounds(ge=1)] = 768 * 16
    k: Annotated[int, bounds(ge=1)] = 32
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "expected_average_only_in"
    b_dec_init: str = "mean"
    # TopK family: AuxK on latents the trainer reports dead (Gao et al. 2024). The coefficient is 1, not the
    # paper's 1/32: at the recipe's LR (docs/training-recipe.md) 1/32 left 2.5% of the toy model's latents dead
    # after 1M tokens, 1 left 0.85% at the same FVU (docs/logbook.md).
    k_aux: Annotated[int, bounds(ge=0)] = 512
    aux_coeff: Annotated[float, bounds(ge=0)] = 1.0
    # BatchTopK: momentum of the running inference threshold.
    threshold_momentum: Annotated[float, bounds(ge=0, lt=1)] = 0.99
    # Matryoshka: nested prefix widths (ascending, the last one is d_sae); empty = d_sae/16, /8, /4, /2, d_sae.
    matryoshka_widths: Annotated[list[int], bounds(ge=1)] = field(default_factory=list)
    # standard (ReLU + decoder-norm-weighted L1).
    l1_coeff: Annotated[float, bounds(ge=0)] = 5.0
    decoder_init_norm: Annotated[float, bounds(gt=0)] = 0.1
    # jumprelu, in the units of inputs with E||x||^2 = 1 (rescaled internally).
    l0_coeff: Annotated[float, bounds(ge=0)] = 1e-3
    jumprelu_bandwidth: Annotated[float, bounds(gt=0)] = 1e-3
    jumprelu_init_threshold: Annotated[float, bounds(ge=0)] = 1e-3
    # Transcoders: the width of the output hook (None: d_in).
    d_out: Annotated[Optional[int], bounds(ge=1)] = None
    # Crosscoders: the width of each hook, in order (d_in is their sum), and the coefficient of the optional L1
    # penalty weighted by each latent's summed per-hook decoder norms (0: TopK alone).
    hook_dims: Annotated[list[int], bounds(ge=1)] = field(default_factory=list)
    decoder_norm_l1_coeff: Annotated[float, bounds(ge=0)] = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        traits = architecture_traits(self.architecture)  # refuses an unknown name, listing the registered ones
        if traits.uses_k and self.k > self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae} for {self.architecture}, got {self.k}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize_activations!r}"
            )
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"b_dec_init must be one of {', '.join(B_DEC_INITS)}, got {self.b_dec_init!r}")
        if self.dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise ValueError(f"dtype must be float32, float16, bfloat16 or float64, got {self.dtype!r}")
        if self.hook_dims and sum(self.hook_dims) != self.d_in:
            raise ValueError(f"hook_dims {self.hook_dims} must sum to d_in={self.d_in} (the hooks side by side)")
        widths = self.prefix_widths()
        if widths != sorted(set(widths)) or widths[-1] != self.d_sae or widths[0] <= 0:
            raise ValueError(
                "matryoshka_widths must be strictly ascending positive widths ending at "
                f"d_sae={self.d_sae}, got {widths}"
            )

    def prefix_widths(self) -> list[int]:
        """The nested dictionary widths a Matryoshka SAE reconstructs with."""
        if self.matryoshka_widths:
            return [int(w) for w in self.matryoshka_widths]
        return sorted({max(1, self.d_sae // f) for f in (16, 8, 4, 2)} | {self.d_sae})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_yaml(cls, path: str | None = None, overrides: list[str] | None = None) -> SAEConfig:
        """Defaults, then a YAML file, then `key=value` overrides."""
        return load_typed_config(cls, path, list(overrides or []))
