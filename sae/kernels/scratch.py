"""Reusable memory for the training step's one large temporary, the [batch, d_sae] pre-activations.

On CPU every fresh tensor of this size (100 MB at batch 4096, d_sae 6144) is a fresh mmap, and
faulting its pages in costs about a third of the GEMM that fills it. One buffer per thread and dtype,
grown as needed, avoids that; CUDA's caching allocator already does the same.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from jaxtyping import Shaped

_local = threading.local()


def scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Shaped[Tensor, "*shape"] | None:
    """An uninitialised CPU tensor of `shape` that the next call from this thread (same dtype) overwrites.

    None off the CPU and under autocast, so that `op(..., out=scratch(...))` allocates as usual there
    (autocast does not apply to `out=` ops)."""
    if device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return None
    buffers = _local.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    if dtype not in buffers or buffers[dtype].numel() < numel:
        buffers.pop(dtype, None)
        buffers[dtype] = torch.empty(numel, dtype=dtype)
    return buffers[dtype][:numel].view(shape)
