"""A folder of images read recursively (`folder:PATH` or just the path); class sub-folders become labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image

from visae.activation_store.sources.base import ImageRecord, ImageSource, register_source
from visae.activation_store.sources.decode import read_record


def image_extensions() -> set[str]:
    """Every file extension PIL can decode (lower case, with the dot)."""
    return {ext.lower() for ext in Image.registered_extensions()}


def files_fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over each file's (path relative to root, size, mtime); a missing file counts as size -1."""
    entries = []
    for path in paths:
        try:
            stat = path.stat()
            entries.append([path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path),
                            stat.st_size, stat.st_mtime_ns])
        except FileNotFoundError:
            entries.append([str(path), -1, 0])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


class FolderSource(ImageSource):
    """Every image file under `root` (by extension, hidden files and folders skipped), in sorted path order.

    If `root` has sub-folders, each top-level sub-folder is a class: label_names are their sorted names, an
    image's label is its class folder's index, and images directly in `root` get label -1.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
        self.spec = f"folder:{self.root}"
        extensions = image_extensions()
        self.paths = sorted(
            p for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
        if not self.paths:
            raise ValueError(f"no image files found under {str(self.root)!r} (looked for {sorted(extensions)[:8]} ...)")
        classes = sorted({p.relative_to(self.root).parts[0] for p in self.paths if p.parent != self.root})
        self.label_names = classes or None
        self._class_index = {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> ImageRecord:
        path = self.paths[self._check_index(i)]
        relative = path.relative_to(self.root)
        label = self._class_index.get(relative.parts[0], -1) if len(relative.parts) > 1 else -1
        return read_record(relative.as_posix(), path, label)

    def fingerprint(self) -> str:
        return files_fingerprint(self.paths, self.root)


@register_source("folder")
def open_folder(path: str) -> FolderSource:
    return FolderSource(path)
