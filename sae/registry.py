"""The registry of SAE architectures and the traits each one declares (timm-like).

An architecture registers itself by subclassing `sae.base.SAE` with an `architecture` name and its own
`traits = ArchitectureTraits(...)`. Every other list of architectures (config validation, the training
recipe's defaults, sweep grids, the file format, Hub ids, the CLI's choices) is derived from here.

Imports nothing from visae, so every module of sae/ can use it without an import cycle (the converters
build SAEs through `architecture_class` rather than importing the base class, which imports the Hub client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict


@dataclass(frozen=True)
class ArchitectureTraits:
    """What the rest of visae needs to know about an architecture, declared in the architecture's own file."""

    sparsity: str  # the SAEConfig field that sets the sparsity: "k", or a coefficient ("l1_coeff", "l0_coeff")
    base_lr: float  # the recipe's learning rate at 2^14 latents (docs/training-recipe.md)
    lr_scales_with_d_in: bool  # unit-norm decoder rows: the recipe LR also scales as (768 / d_in) ** 0.5
    sparsity_warmup: float  # share of the run over which the sparsity coefficient ramps up from 0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_decay: float = 0.2  # share of the run, at its end, over which the LR decays linearly to 0
    dead_window: float = 0.1  # share of the budget without firing after which a latent is dead (capped in tokens)
    needs_calibration: bool = False  # `calibrate` fits inference statistics after training (BatchTopK's threshold)
    saved_as: str | None = None  # the architecture named in a saved cfg.json; None = its own name
    extra_tensors: tuple[str, ...] = ()  # saved [d_sae] tensors besides W_enc, b_enc, W_dec and b_dec
    # What it reads: "sae" (one hook, reconstructed), "transcoder" (one hook, predicting another: `d_out`) or
    # "crosscoder" (several hooks at once, each reconstructed: `hook_dims`).
    kind: str = "sae"
    extra_files: tuple[str, ...] = ()  # files its folder holds besides cfg.json, weights and sparsity (published too)

    @property
    def uses_k(self) -> bool:
        """Whether the sparsity is set by `k` (the TopK family) rather than by a coefficient."""
        return self.sparsity == "k"


class Recipe(TypedDict):
    """The training-recipe traits that related architectures share (`ArchitectureTraits(..., **recipe)`)."""

    base_lr: float
    adam_betas: tuple[float, float]
    lr_decay: float
    dead_window: float


_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Add an SAE class under its `architecture` name; `SAE.__init_subclass__` calls this."""
    name = cls.architecture
    if not isinstance(cls.__dict__.get("traits"), ArchitectureTraits):
        raise TypeError(f"{cls.__qualname__} must declare its own traits = ArchitectureTraits(...)")
    known = _REGISTRY.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"SAE architecture {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove an architecture (for architectures defined at run time, e.g. in tests)."""
    del _REGISTRY[name]


def architecture_names() -> tuple[str, ...]:
    """Every registered architecture, sorted (the choices of `architecture` in configs and on the command line)."""
    return tuple(sorted(_REGISTRY))


def architecture_class(name: str) -> type:
    """The SAE subclass registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown SAE architecture {name!r}; choose one of {', '.join(architecture_names())}")
    return _REGISTRY[name]


def architecture_traits(name: str) -> ArchitectureTraits:
    return architecture_class(name).traits

