"""Reading foreign torch checkpoints without running their pickled code."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch


def load_weights_only(source: bytes | Path, name: str) -> Any:
    """`torch.load(weights_only=True)`; a checkpoint holding arbitrary objects is refused with the reason."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{name} needs full unpickling ({reason}); visae reads foreign checkpoints with "
            "torch.load(weights_only=True) only, because unpickling can run arbitrary code. Ask for (or re-save) "
            "a checkpoint holding only tensors, e.g. torch.save(model.state_dict(), path), or safetensors"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{name} is not a readable torch checkpoint: {err}") from err


def tensor_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict (possibly nested under 'state_dict')."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{name} does not hold a state dict of tensors")
    return dict(obj)


def require_keys(tensors: dict[str, torch.Tensor], keys: tuple[str, ...], name: str) -> None:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}; found keys {', '.join(sorted(tensors))}")
