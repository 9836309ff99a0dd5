"""Where a crosscoder's latents live (docs/metrics.md, "Crosscoders"): each latent's decoder norm at each of its
hooks (`CrossCoder.decoder_norms`, in the training units, as `hook_profile.safetensors` holds them) as feature-table
columns, the hook a latent is exclusive to, and the exclusive and shared shares over the latents that fired in the
evaluation (`sae.crosscoder.hook_profile`, the summary training records over its closing evaluation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from visae.sae.crosscoder import EXCLUSIVE_SHARE, CrossCoder, hook_profile

SHARED = "shared"  # `hook_exclusive` of a latent that lives in several hooks


def norm_column(hook: str) -> str:
    """The feature-table column of each latent's decoder norm at `hook`."""
    return f"decoder_norm:{hook}"


def hook_profile_columns(sae: CrossCoder, hooks: Sequence[str],
                         fired: np.ndarray) -> tuple[dict[str, np.ndarray | list[str]], dict]:
    """(feature-table columns, summary) of the crosscoder's hook profile; `fired` marks the latents that fired."""
    norms = sae.decoder_norms().detach().cpu()
    share = norms / norms.sum(1, keepdim=True).clamp_min(1e-12)
    best_share, best_hook = share.max(1)
    exclusive: list[str] = [str(hooks[h]) if s >= EXCLUSIVE_SHARE else SHARED
                            for s, h in zip(best_share.tolist(), best_hook.tolist())]
    columns: dict[str, np.ndarray | list[str]] = {norm_column(hook): norms[:, i].numpy()
                                                  for i, hook in enumerate(hooks)}
    columns["hook_exclusive"] = exclusive
    return columns, hook_profile(norms, hooks, torch.as_tensor(fired))
