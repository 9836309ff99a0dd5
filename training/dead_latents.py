"""Dead-latent tracking in tokens since each latent last fired, kept on the device (no host sync per step)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from jaxtyping import Bool, Float


class DeadLatentTracker:
    """A latent is dead once `dead_after` tokens have passed since it last fired.

    The mask feeds `TrainState.dead_mask` (AuxK for the TopK family). The counters live in int64 on
    the training device and are updated with tensor ops only.
    """

    def __init__(self, d_sae: int, dead_after: int, device: torch.device):
        self.dead_after = int(dead_after)
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)

    def update(self, fired: Bool[Tensor, " d_sae"], n_tokens: int) -> None:
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired.masked_fill_(fired, 0)

    @property
    def dead_mask(self) -> Bool[Tensor, " d_sae"]:
        return self.tokens_since_fired >= self.dead_after

    def dead_fraction(self) -> Float[Tensor, ""]:
        return self.dead_mask.float().mean()

    def state_dict(self) -> dict:
        return {"tokens_since_fired": self.tokens_since_fired.cpu(), "dead_after": self.dead_after}

    def load_state_dict(self, state: dict) -> None:
        self.dead_after = int(state["dead_after"])
        self.tokens_since_fired.copy_(state["tokens_since_fired"])


def dead_after_tokens(after_tokens: int, max_fraction: float, total_tokens: int) -> int:
    """The recipe's ~10M tokens, shortened to a share of the budget for short runs."""
    return max(1, min(int(after_tokens), int(max_fraction * total_tokens)))
