"""Atomic writes: the new content goes to a temporary name beside the target, then is renamed over it, so a
crash or kill leaves either the old file (or folder) or the new one, never a half-written one.

Temporary names are `.NAME.tmp-PID` (and `.NAME.old-PID` for a folder being swapped out): hidden, next to
their target, and naming the process that made them, so the leftovers of a killed process are recognisable.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """`.NAME.<kind>-PID` beside `path`."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` for any writer to create (a file or a folder); when the block ends
    without error it is renamed over `path`, otherwise removed and the old `path` left as it was."""
    path = Path(path)
    tmp = temporary_sibling(path)
    _remove(tmp)  # left by an earlier process that had the same PID
    try:
        yield tmp
        _rename_over(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """`atomic_path` for a folder: yield a new empty temporary folder to fill; it replaces any folder at `path`."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write text or bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)


_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(\d+)$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the `.NAME.tmp-PID` and `.NAME.old-PID` leftovers in `folder` (not below it) of processes that are no
    longer running (killed mid-write); those of live processes, this one included, are left alone. Returns the
    removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = _TEMPORARY.match(path.name)
        if match and not _process_alive(int(match.group(1))):
            _remove(path)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a PID this system cannot have): leave its files alone
    return True


def _rename_over(tmp: Path, path: Path) -> None:
    """A rename cannot replace a non-empty folder: an old folder is moved aside first and removed after the swap."""
    if not (tmp.is_dir() and path.exists()):
        os.replace(tmp, path)
        return
    old = temporary_sibling(path, "old")
    _remove(old)
    os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_output_folder(path: str | os.PathLike, setting: str) -> None:
    """Refuse, before any work, a local output folder that is a file or lies under one, naming the setting to
    change (URLs such as s3://... are left to their store)."""
    if "://" in str(path):
        return
    folder = Path(path).absolute()
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is a file" if blocker == folder else f"lies under the file {blocker}"
        raise ValueError(f"{setting} {path} {where}, not a folder; choose another {setting}")

