"""Typed training configuration, loaded from YAML with `key=value` overrides (omegaconf).

Fields left at `None` take the recipe defaults of docs/training-recipe.md for the chosen architecture; see
`resolve_defaults`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Optional

from omegaconf import MISSING, OmegaConf

from visae.core.config import load_typed_config
from visae.core.fields import bounds, check_fields, check_values, folder_name
from visae.sae import SAEConfig, architecture_names, architecture_traits

DTYPES = ("float32", "bfloat16")
WANDB_MODES = ("offline", "online", "disabled")

# Each architecture's base learning rate (its traits' `base_lr`) is for 2^14 latents; the LR scales as
# (2^14 / d_sae) ** 0.5 (docs/training-recipe.md).
BASE_WIDTH = 2**14
# The TopK family's base LR is for d_in = 768 (traits' `lr_scales_with_d_in`). Its decoder rows have unit
# norm, so their entries are about 1/sqrt(d_in) and an Adam step of a given size moves a row by about
# lr * sqrt(d_in): the LR scales as (768 / d_in) ** 0.5 to keep that relative step. The family's base LR is
# 4x the anchors' 2e-4, which were tuned for runs of 10^8+ tokens: at 250-1,000 steps it took FVU down on
# every held-out set (docs/logbook.md; the toy model's 4M-token FVU from 0.024 to 0.012).
UNIT_NORM_BASE_D_IN = 768
# ... and that relative step, lr * sqrt(d_in), is capped: the width factor sqrt(2^14 / d_sae) extrapolated to
# small dictionaries gives steps that kill latents (128 latents at d_in 32: 8.6% dead after 200 steps). The
# logbook's sets took 0.05-0.072 and kept latents alive; 0.136 did not (docs/logbook.md).
MAX_RELATIVE_STEP = 0.08


@dataclass
class TrainConfig:
    """Everything one SAE training run needs. `None` means "recipe default" (see `resolve_defaults`)."""

    # data
    store: str = MISSING  # path or s3:// URL of the activation store to train on
    hook: str = MISSING  # hook point inside the store, e.g. blocks.-2.resid_post (negative blocks count from the end)
    tokens: str = "all"  # which tokens to train on: all, cls, registers or patches
    out_hook: Optional[str] = None
    """transcoders: the hook they predict from `hook`, in the same store, e.g. blocks.2.mlp_out"""
    cross_hooks: list[str] = field(default_factory=list)
    """crosscoders: the hooks read with `hook`, one dictionary over all, e.g. blocks.3.resid_post blocks.5.resid_post"""
    cross_stores: list[str] = field(default_factory=list)
    """crosscoders over models: the store of each of cross_hooks (the same images harvested from another model);
    empty = `store`"""
    hook_widths: Annotated[list[int], bounds(ge=1)] = field(default_factory=list)
    """crosscoders over hooks of different widths: every hook's width (hook, then cross_hooks), stated to confirm
    the mix"""
    # dictionary
    architecture: str = "topk"
    """topk, batchtopk, matryoshka_batchtopk, jumprelu or standard; a transcoder (with out_hook), e.g.
    topk_skip_transcoder; or crosscoder (with cross_hooks)"""
    expansion_factor: Annotated[float, bounds(gt=0)] = 16.0
    """width in latents as a multiple of the input dimension d_in"""
    d_sae: Annotated[Optional[int], bounds(ge=1)] = None
    """width as an absolute number of latents; overrides expansion_factor"""
    k: Annotated[int, bounds(ge=1)] = 32  # active latents per token (TopK family)
    sparsity_coefficient: Annotated[Optional[float], bounds(ge=0)] = None
    """L1 (standard) or L0 (jumprelu) coefficient; None = SAE default"""
    sae_params: dict[str, Any] = field(default_factory=dict)  # further SAEConfig fields, e.g. {k_aux: 512}
    # budget and optimisation
    total_tokens: Annotated[int, bounds(ge=1)] = 50_000_000
    """training budget in tokens (4e6 and the like are whole numbers)"""
    batch_size: Annotated[int, bounds(ge=1)] = 4096  # tokens per optimizer step
    lr: Annotated[Optional[float], bounds(gt=0)] = None
    """learning rate; None = the recipe's LR for the architecture and width"""
    lr_scale: Annotated[float, bounds(gt=0)] = 1.0
    """multiple of the recipe LR, used when lr is None (a sweep's grid.lr_scale, e.g. 0.5 1 2)"""
    lr_warmup_steps: Annotated[int, bounds(ge=0)] = 1000  # steps of linear LR warm-up from 0
    lr_warmup_max_fraction: Annotated[float, bounds(ge=0, le=1)] = 0.05
    """short runs warm up over at most this share of their steps"""
    lr_decay_fraction: Annotated[Optional[float], bounds(ge=0, le=1)] = None
    """linear decay to 0 over the final share of steps; None = the architecture's default (0.5 for the SAEs of the
    TopK family, else 0.2)"""
    sparsity_warmup_fraction: Annotated[Optional[float], bounds(ge=0, le=1)] = None
    """share of the run over which the sparsity coefficient ramps up from 0; None = the architecture's default"""
    adam_betas: Annotated[Optional[list[float]], bounds(ge=0, lt=1)] = None
    """Adam's beta1 and beta2, e.g. 0.9 0.999; None = the architecture's default"""
    grad_clip: Annotated[float, bounds(ge=0)] = 1.0  # max global grad norm; 0 disables
    dead_after_tokens: Annotated[int, bounds(ge=1)] = 10_000_000
    """tokens without firing after which a latent is dead (see dead_max_fraction)"""
    dead_max_fraction: Annotated[Optional[float], bounds(gt=0, le=1)] = None
    """... or this share of total_tokens, whichever is smaller; None = the architecture's default (0.05 for the SAEs
    of the TopK family, else 0.1)"""
    seed: Annotated[int, bounds(ge=0)] = 0  # seed of the initialisation and of the data order
    # runtime
    device: str = "auto"  # torch device: auto (this rank's GPU if one is visible, else cpu), cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # float32, or bfloat16 autocast (GPU, or a CPU with AMX/AVX512-BF16)
    # bookkeeping
    out_dir: str = "runs"  # folder that receives the run folder
    run_name: Annotated[Optional[str], folder_name()] = None  # name of the run folder; None = derived from the settings
    log_every_steps: Annotated[int, bounds(ge=1)] = 50  # log the training metrics every this many steps
    eval_every_steps: Annotated[int, bounds(ge=1)] = 500
    """log inference-mode FVU and L0 on the next (unseen) batch every this many steps"""
    checkpoint_every_steps: Annotated[int, bounds(ge=1)] = 500
    """save a checkpoint (what --resume continues from) every this many steps"""
    eval_tokens: Annotated[int, bounds(ge=1)] = 2**18
    """tokens for the closing summary (FVU, L0, dead fraction) saved in the metadata"""
    wandb_mode: str = "offline"  # Weights & Biases: offline, online or disabled; the WANDB_MODE variable wins
    wandb_project: str = "visae"  # Weights & Biases project

    def __post_init__(self) -> None:
        """Refuse impossible settings with a message naming the field and the fix: each field's declared rule
        (core.fields), the choices, then the rules between fields."""
        from visae.activation_store.layout import check_token_kind

        check_fields(self)
        check_values(SAEConfig, self.sae_params, "sae_params")
        check_token_kind(self.tokens)
        _choice("architecture", self.architecture, architecture_names())
        _choice("dtype", self.dtype, DTYPES)
        _choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        if self.total_tokens < self.batch_size:
            raise ValueError(f"total_tokens ({self.total_tokens}) is smaller than one batch ({self.batch_size}); "
                             "raise total_tokens or lower batch_size")
        if self.adam_betas is not None and len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas needs two numbers, e.g. [0.9, 0.999]; got {self.adam_betas}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.run_name or default_run_name(self))


def default_run_name(cfg: TrainConfig) -> str:
    width = f"n{cfg.d_sae}" if cfg.d_sae else f"x{cfg.expansion_factor:g}"
    hooks = "+".join([cfg.hook, *([cfg.out_hook] if cfg.out_hook else []), *cfg.cross_hooks])
    return f"{hooks}-{cfg.tokens}-{cfg.architecture}-{sparsity_label(cfg)}-{width}"


def sparsity_label(cfg: TrainConfig) -> str:
    """`k<k>` for architectures whose sparsity is set by k, else `c<coefficient>` (run and sweep member names)."""
    if architecture_traits(cfg.architecture).uses_k:
        return f"k{cfg.k}"
    return f"c{cfg.sparsity_coefficient or 'default'}"


def width(cfg: TrainConfig, d_in: int) -> int:
    """The number of latents: `d_sae` when given, else `expansion_factor * d_in`."""
    if cfg.d_sae:
        return int(cfg.d_sae)
    latents = int(round(cfg.expansion_factor * d_in))
    if latents < 1:
        raise ValueError(f"expansion_factor {cfg.expansion_factor:g} x d_in {d_in} gives no latents; raise "
                         "expansion_factor or set d_sae")
    return latents


def default_lr(architecture: str, d_sae: int, d_in: int) -> float:
    """The recipe LR: 1/sqrt(width) from the anchors, and for the TopK family 1/sqrt(d_in) around 768, with the
    relative step of a unit-norm decoder row capped at MAX_RELATIVE_STEP."""
    traits = architecture_traits(architecture)
    lr = traits.base_lr * math.sqrt(BASE_WIDTH / d_sae)
    if traits.lr_scales_with_d_in:
        lr = min(lr * math.sqrt(UNIT_NORM_BASE_D_IN / d_in), MAX_RELATIVE_STEP / math.sqrt(d_in))
    return lr


def resolve_defaults(cfg: TrainConfig, d_in: int) -> TrainConfig:
    """A copy with every `None` recipe field filled in for this architecture and input width."""
    d_sae = width(cfg, d_in)
    traits = architecture_traits(cfg.architecture)
    return replace(
        cfg,
        d_sae=d_sae,
        lr=cfg.lr if cfg.lr is not None else cfg.lr_scale * default_lr(cfg.architecture, d_sae, d_in),
        sparsity_warmup_fraction=(cfg.sparsity_warmup_fraction if cfg.sparsity_warmup_fraction is not None
                                  else traits.sparsity_warmup),
        adam_betas=list(cfg.adam_betas if cfg.adam_betas is not None else traits.adam_betas),
        lr_decay_fraction=cfg.lr_decay_fraction if cfg.lr_decay_fraction is not None else traits.lr_decay,
        dead_max_fraction=cfg.dead_max_fraction if cfg.dead_max_fraction is not None else traits.dead_window,
        run_name=cfg.run_name or default_run_name(cfg),
    )


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A checked TrainConfig from a YAML file plus `key=value` overrides (dotted keys reach nested fields)."""
    return load_typed_config(TrainConfig, path, list(overrides))


def to_dict(cfg) -> dict:
    return asdict(cfg)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
