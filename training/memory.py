"""How much memory training needs, estimated before anything is allocated, so that a width, batch or sweep
grid that cannot fit is refused with the estimate instead of growing until the kernel kills the process."""

from __future__ import annotations

from collections.abc import Sequence

import psutil
import torch

from visae.training.config import TrainConfig, width

GIB = 2**30
FLOAT_BYTES = 4
# Weights, their gradients and Adam's two moments, all float32.
STATE_COPIES = 4
# Per token of a batch: the dense pre-activations with their gradient and a selection scratch (x d_sae),
# and the input, reconstruction, error and their gradients (x d_in).
BATCH_COPIES_SAE, BATCH_COPIES_INPUT = 3, 4


def state_bytes(cfg: TrainConfig, d_in: int) -> int:
    """Weights, gradients and optimizer state of one SAE (encoder, decoder, both biases)."""
    d_sae = width(cfg, d_in)
    return STATE_COPIES * FLOAT_BYTES * (2 * d_in * d_sae + d_sae + d_in)


def batch_bytes(cfg: TrainConfig, d_in: int) -> int:
    """The activations of one training step of one SAE."""
    return FLOAT_BYTES * cfg.batch_size * (BATCH_COPIES_SAE * width(cfg, d_in) + BATCH_COPIES_INPUT * d_in)


def training_bytes(members: Sequence[TrainConfig], d_in: int, at_once: int = 1) -> int:
    """Every member's state, plus the activations of the `at_once` largest steps that run together."""
    steps = sorted((batch_bytes(m, d_in) for m in members), reverse=True)
    return sum(state_bytes(m, d_in) for m in members) + sum(steps[:at_once])


def available_bytes(device: torch.device) -> int:
    """Free memory where training will allocate: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_fits(members: Sequence[TrainConfig], d_in: int, device: torch.device, at_once: int = 1) -> None:
    """Refuse, before allocating, a run whose estimated memory exceeds what `device` has free."""
    need, free = training_bytes(members, d_in, at_once), available_bytes(device)
    if need <= free:
        return
    what = (f"{len(members)} SAEs of this sweep on this rank" if len(members) > 1
            else f"an SAE of {width(members[0], d_in):,} latents (d_in {d_in}) at batch_size {members[0].batch_size:,}")
    fixes = ("split the grid into several sweeps, add ranks under torchrun, or lower batch_size" if len(members) > 1
             else "lower expansion_factor/d_sae or batch_size")
    raise ValueError(f"training {what} needs about {need / GIB:,.1f} GiB (weights, gradients, Adam state and one "
                     f"batch's activations) but {device.type} has {free / GIB:,.1f} GiB free; {fixes}")
