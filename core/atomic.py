"""Atomic writes: the new content goes to a temporary name beside the target, then is renamed over it, so a
crash or kill leaves either the old file or the new one, never a half-written one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
