"""How a resolved TrainConfig becomes an SAE and its SAETrainer; shared by single runs and sweeps."""

from __future__ import annotations

from visae.core.devices import autocast_dtype
from visae.sae import SAEConfig, architecture_traits
from visae.training.config import TrainConfig, width
from visae.training.dead_latents import dead_after_tokens
from visae.training.schedule import warmup_decay
from visae.training.trainer import SAETrainer


def sae_config(cfg: TrainConfig, shape: dict, metadata: dict) -> SAEConfig:
    """The SAEConfig of a resolved TrainConfig: architecture, width, k, sparsity coefficient, extras. `shape` holds
    `d_in` and, for transcoders and crosscoders, the fields their hooks fix (`training.hook_set.HookSet.shape`)."""
    params = {**cfg.sae_params, **shape}
    traits = architecture_traits(cfg.architecture)
    if cfg.sparsity_coefficient is not None and not traits.uses_k:
        params[traits.sparsity] = cfg.sparsity_coefficient
    try:
        return SAEConfig(architecture=cfg.architecture, d_sae=width(cfg, shape["d_in"]), k=cfg.k,
                         normalize_activations="expected_average_only_in", metadata=metadata, **params)
    except TypeError as err:
        raise ValueError(f"bad sae_params {sorted(cfg.sae_params)}: {err}; see sae.SAEConfig for the fields") from err


def build_trainer(sae, cfg: TrainConfig, total_steps: int, data_parallel: bool) -> SAETrainer:
    """The trainer of `sae` under a resolved TrainConfig (`training.config.resolve_defaults`)."""
    if (cfg.lr is None or cfg.adam_betas is None or cfg.sparsity_warmup_fraction is None
            or cfg.lr_decay_fraction is None or cfg.dead_max_fraction is None):
        raise ValueError("build_trainer needs a resolved TrainConfig (training.config.resolve_defaults)")
    beta1, beta2 = cfg.adam_betas
    return SAETrainer(
        sae, lr=cfg.lr, betas=(beta1, beta2), grad_clip=cfg.grad_clip,
        schedule=warmup_decay(total_steps, cfg.lr_warmup_steps, cfg.lr_warmup_max_fraction, cfg.lr_decay_fraction),
        sparsity_warmup_fraction=cfg.sparsity_warmup_fraction,
        dead_after=dead_after_tokens(cfg.dead_after_tokens, cfg.dead_max_fraction, cfg.total_tokens),
        autocast_dtype=autocast_dtype(cfg.dtype), data_parallel=data_parallel,
    )
