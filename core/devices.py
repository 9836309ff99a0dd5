"""Device and precision names of the configs, resolved to torch objects."""

from __future__ import annotations

import os
import re

import torch

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """The torch device a config's `device` names: `auto` is this rank's CUDA GPU (torchrun's LOCAL_RANK) when one
    is visible, else the CPU; `cpu`, `cuda` (the current GPU) and `cuda:N` are taken as they are.

    Anything else, or a GPU this machine does not have, is refused with a one-line ValueError naming the valid forms.
    """
    name = str(name).strip()
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"device auto: this is local rank {local_rank} but only {count} CUDA GPU(s) are "
                             f"visible; launch at most {count} processes per node, or pass device=cpu")
        return torch.device("cuda", local_rank)
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", name)
    if match is None or (match[1] == "cpu" and match[2] not in (None, "0")):
        raise ValueError(f"unknown device {name!r}; use one of {DEVICE_FORMS} (N: a visible GPU's index)")
    if match[1] == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is visible; use device=cpu or device=auto "
                         f"(valid forms: {DEVICE_FORMS})")
    count = torch.cuda.device_count()
    if match[2] is not None and int(match[2]) >= count:
        raise ValueError(f"device {name!r} asked for but only {count} CUDA GPU(s) are visible (cuda:0 to "
                         f"cuda:{count - 1}); use one of {DEVICE_FORMS}")
    return torch.device(name)


def autocast_dtype(dtype: str) -> torch.dtype | None:
    """The autocast dtype of a config's `dtype` (None: plain float32)."""
    return torch.bfloat16 if dtype == "bfloat16" else None
