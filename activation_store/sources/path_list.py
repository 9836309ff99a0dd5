"""A text file of image paths (`list:FILE.txt`): one path per line, relative paths resolved against the file's
folder; blank lines and lines starting with `#` are ignored. Images have no labels."""

from __future__ import annotations

from pathlib import Path

from visae.activation_store.sources.base import ImageRecord, ImageSource, register_source
from visae.activation_store.sources.decode import read_record
from visae.activation_store.sources.folder import files_fingerprint


class PathListSource(ImageSource):
    def __init__(self, list_file: str | Path):
        self.list_file = Path(list_file).expanduser().resolve()
        if not self.list_file.is_file():
            raise FileNotFoundError(f"image list {str(list_file)!r} does not exist; write one image path per line")
        self.spec = f"list:{self.list_file}"
        lines = [line.strip() for line in self.list_file.read_text().splitlines()]
        self.ids = [line for line in lines if line and not line.startswith("#")]
        if not self.ids:
            raise ValueError(f"image list {str(self.list_file)!r} names no images")
        self.paths = [self.list_file.parent / Path(p).expanduser() for p in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> ImageRecord:
        i = self._check_index(i)
        return read_record(self.ids[i], self.paths[i])

    def fingerprint(self) -> str:
        return files_fingerprint(self.paths, self.list_file.parent)


@register_source("list")
def open_path_list(path: str) -> PathListSource:
    return PathListSource(path)
