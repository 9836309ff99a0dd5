"""Learning-rate and sparsity-coefficient schedules (docs/training-recipe.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WarmupDecay:
    """LR multiplier: linear warm-up from 0, constant, then linear decay to 0 over the final steps.

    A picklable callable, so `LambdaLR.state_dict()` records it with the scheduler.
    """

    total_steps: int
    warmup_steps: int
    decay_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_start = self.total_steps - self.decay_steps
        if self.decay_steps and step >= decay_start:
            return max(0.0, (self.total_steps - step) / self.decay_steps)
        return 1.0


def warmup_decay(total_steps: int, warmup_steps: int, warmup_max_fraction: float, decay_fraction: float) -> WarmupDecay:
    """The recipe's schedule, with the warm-up capped to a share of short runs."""
    warmup = min(warmup_steps, int(warmup_max_fraction * total_steps))
    return WarmupDecay(total_steps=total_steps, warmup_steps=max(warmup, 0),
                       decay_steps=int(decay_fraction * total_steps))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: WarmupDecay) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def sparsity_scale(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Factor 0..1 applied to the sparsity coefficient: a linear ramp over the first `warmup_fraction` of steps."""
    warmup = int(warmup_fraction * total_steps)
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
