"""Device and precision names of the configs, resolved to torch objects."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` is this rank's CUDA GPU (torchrun's LOCAL_RANK) when one is visible, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is visible; use device=cpu or device=auto")
    return device


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of a config's `dtype` (None: plain float32)."""
    return torch.bfloat16 if dtype == "bfloat16" else None
