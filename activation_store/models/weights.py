"""Loading a local weights file (`--weights PATH`) into an already-built architecture."""

from __future__ import annotations

import torch
from timm.models import load_state_dict
from torch import nn


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch checkpoint (loaded with weights_only=True).

    A checkpoint dict's `state_dict_ema`, `model_ema`, `state_dict` or `model` entry is used when present, and a
    DataParallel `module.` prefix is stripped (timm's loader does both).
    """
    try:
        return load_state_dict(path, use_ema=True, device="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"cannot read weights {path!r} ({type(e).__name__}: {e}); give a .safetensors file or a torch "
            "checkpoint of plain tensors"
        ) from e


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Strictly load `state` into `module`, naming the mismatched keys if the architecture does not match."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"weights {path!r} do not fit the architecture: {e}") from e
    if missing or unexpected:
        raise ValueError(
            f"weights {path!r} do not fit the architecture: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}; check the model spec matches the checkpoint"
        )
