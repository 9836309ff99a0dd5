"""Hugging Face datasets: `hf:DATASET[,split=NAME][,image=COLUMN][,label=COLUMN][,streaming=true]`.

DATASET is named the way `datasets` names it: a Hub id read from the local cache (`hf:ILSVRC/imagenet-1k`; it works
offline with `HF_DATASETS_OFFLINE=1`), a folder written by `save_to_disk`, a local dataset folder, or a glob of
Parquet (or Arrow) files (`hf:/data/in1k/val-*.parquet`). The location ends at the first comma outside braces.

- `split`: which split; may be left out when the dataset has one. A missing split is refused with the ones it has.
- `image` (default `image`): an `Image` or binary column; the bytes are decoded here, through the same checks as
  files (a cell that is not an image is a bad file, never a crash).
- `label` (default `label` when the dataset has it): a `ClassLabel` column (its names become the store's label
  names) or an integer column.
- `streaming=true`: read the data files in place as an `IterableDataset`, never converting them into the Arrow
  cache; images are then read in order (see `StreamCursor`).

Image i has the id `SPLIT/i`, its index in the split.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

import fsspec

from visae.activation_store.sources.base import (
    ImageRecord,
    ImageSource,
    check_options,
    register_source,
    split_location,
)
from visae.activation_store.sources.decode import bytes_record, read_record

if TYPE_CHECKING:  # `datasets` takes half a second to import: only the hf source imports it, when it is opened
    import datasets

OPTIONS = {"split": None, "image": "image", "label": None, "streaming": False}
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


def is_saved_to_disk(location: str) -> bool:
    return any(os.path.isfile(os.path.join(location, name)) for name in ("state.json", "dataset_dict.json"))


def builder_arguments(location: str) -> tuple[str, str | None]:
    """`load_dataset`'s (path, data_files) for a glob or file of Parquet/Arrow files, or a Hub id or dataset folder."""
    suffix = os.path.splitext(location)[1].lower()
    return (_FILE_BUILDERS[suffix], location) if suffix in _FILE_BUILDERS else (location, None)


def choose_split(location: str, available: list[str], split: str | None) -> str:
    if split is None and len(available) == 1:
        return available[0]
    if split not in available:
        asked = f"has no split {split!r}" if split else "has several splits"
        raise ValueError(f"the dataset {location} {asked}; choose one of {', '.join(available)} with ',split=NAME'")
    return split


class StreamCursor:
    """Random access over an `IterableDataset` for readers that go mostly forward, as a harvest does: the last
    `window` rows are kept, a row ahead is reached by reading on, and a row further back restarts the stream
    there (`skip`). Thread-safe; decoding happens outside, on the raw rows it returns."""

    def __init__(self, dataset: datasets.IterableDataset, window: int = 1024):
        self.dataset, self.window = dataset, window
        self.rows: OrderedDict[int, dict] = OrderedDict()
        self.position, self.stream = 0, [iter(dataset)]  # in a list, for the finalizer
        self.lock = threading.Lock()
        # close the stream's reader at exit, before the interpreter tears down the modules it needs to close
        weakref.finalize(self, _close, self.stream)

    def __getitem__(self, i: int) -> dict:
        with self.lock:
            if i in self.rows:
                return self.rows[i]
            if i < self.position:
                _close(self.stream)
                self.rows.clear()
                self.position, self.stream[0] = i, iter(self.dataset.skip(i))
            for position in range(self.position, i + 1):
                row = next(self.stream[0], None)
                if row is None:
                    raise IndexError(f"row {i} is past the end of the stream ({position} rows)")
                self.rows[position] = row
                if len(self.rows) > self.window:
                    self.rows.popitem(last=False)
            self.position = i + 1
            return self.rows[i]


def _close(stream: list) -> None:
    close = getattr(stream[0], "close", None)
    if close is not None:
        close()


class HuggingFaceSource(ImageSource):
    """One split of a Hugging Face dataset, read by row index."""

    def __init__(self, location: str, split: str | None = None, image: str = "image", label: str | None = None,
                 streaming: bool = False):
        import datasets

        local = os.path.exists(os.path.expanduser(location)) or glob.has_magic(location)
        self.location = os.path.abspath(os.path.expanduser(location)) if local else location
        dataset, self.split = self._load(split, streaming)
        features = dataset.features or datasets.Features()
        self.image, self.label = image, label or ("label" if "label" in features else None)
        self._check_columns(features)
        options = [f"split={self.split}", f"image={image}"] + [f"label={self.label}"] * bool(self.label)
        self.spec = "hf:" + ",".join([self.location, *options] + ["streaming=true"] * streaming)
        label_feature = features[self.label] if self.label else None
        self.label_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
        self._fingerprint = self._dataset_fingerprint(dataset, streaming)
        self.rows, self.n = self._raw_rows(dataset, features)

    def _raw_rows(self, dataset, features) -> tuple[datasets.Dataset | StreamCursor, int]:
        """Row access to the image column (undecoded: visae decodes) and the label column, and the number of rows."""
        import datasets

        raw = dataset.select_columns([c for c in (self.image, self.label) if c])
        if isinstance(features[self.image], datasets.Image):
            raw = raw.cast_column(self.image, datasets.Image(decode=False))
        if isinstance(raw, datasets.IterableDataset):
            return StreamCursor(raw), self._stream_length(raw)
        return raw, len(raw)

    def _load(self, split: str | None, streaming: bool) -> tuple[datasets.Dataset | datasets.IterableDataset, str]:
        """The split's dataset and the split's name (a lone saved Dataset without one counts as `train`)."""
        import datasets

        if is_saved_to_disk(self.location):
            if streaming:
                raise ValueError(f"{self.location} is a save_to_disk folder, read in place already; drop streaming")
            saved = datasets.load_from_disk(self.location)
            if isinstance(saved, datasets.Dataset):
                return saved, choose_split(self.location, [str(saved.split or "train")], split)
            split = choose_split(self.location, [str(s) for s in saved], split)
            return saved[split], split
        path, files = builder_arguments(self.location)
        split = choose_split(self.location, [str(s) for s in datasets.get_dataset_split_names(path, data_files=files)],
                             split)
        if streaming:
            return datasets.load_dataset(path, data_files=files, split=split, streaming=True), split
        return datasets.load_dataset(path, data_files=files, split=split), split

    def _check_columns(self, features: datasets.Features) -> None:
        import datasets

        for role, column in (("image", self.image), ("label", self.label)):
            if column and column not in features:
                raise ValueError(f"the dataset {self.location} ({self.split}) has no {role} column {column!r}; its "
                                 f"columns are {', '.join(features)}: pass ',{role}=COLUMN'")
        if not (isinstance(features[self.image], datasets.Image) or features[self.image] == datasets.Value("binary")):
            raise ValueError(f"column {self.image!r} of {self.location} holds {features[self.image]}, not images")
        label = features[self.label] if self.label else None
        if label is not None and not (isinstance(label, datasets.ClassLabel)
                                      or (isinstance(label, datasets.Value) and label.dtype.startswith("int"))):
            raise ValueError(f"label column {self.label!r} of {self.location} holds {label}; use a ClassLabel or "
                             "integer column (dataset.class_encode_column turns strings into one)")

    def _dataset_fingerprint(self, dataset, streaming: bool) -> str:
        """The dataset's own fingerprint, or (streaming, where there is none) its data files with their sizes."""
        import datasets

        if streaming:
            path, files = builder_arguments(self.location)
            builder = datasets.load_dataset_builder(path, data_files=files)
            files = list((builder.config.data_files or {}).get(self.split, []))
            own = [[f, fsspec.core.url_to_fs(f)[0].size(f)] for f in files]
        else:
            own = dataset._fingerprint
        return hashlib.sha256(json.dumps([self.spec, own]).encode()).hexdigest()

    def _stream_length(self, dataset: datasets.IterableDataset) -> int:
        splits = dataset.info.splits or {}
        known = splits[self.split].num_examples if self.split in splits else 0
        return known or sum(1 for _ in dataset.select_columns([self.label or self.image]))

    def fingerprint(self) -> str:
        return self._fingerprint

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> ImageRecord:
        i = self._check_index(i)
        image_id = f"{self.split}/{i}"
        row = self.rows[i]
        label = int(row[self.label]) if self.label and row[self.label] is not None else -1
        cell = row[self.image]
        if isinstance(cell, dict) and cell.get("bytes") is None and cell.get("path"):
            return read_record(image_id, cell["path"], label)  # a dataset of image paths
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        return bytes_record(image_id, data or b"", label)


@register_source("hf")
def open_huggingface(text: str) -> HuggingFaceSource:
    location, options = split_location(text)
    options = check_options("hf", options, OPTIONS, "hf:ILSVRC/imagenet-1k,split=validation,label=label")
    streaming = options.pop("streaming")
    if not isinstance(streaming, bool):
        raise ValueError(f"hf option streaming must be true or false, got {streaming!r}")
    split, label = (None if options[k] is None else str(options[k]) for k in ("split", "label"))
    return HuggingFaceSource(location, split, str(options["image"]), label, streaming)
