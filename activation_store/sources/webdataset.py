"""WebDataset tar shards: `wds:SHARDS[,image=EXT][,label=EXT|label=json:FIELD]`, local or at an fsspec URL (`s3://`).

SHARDS is a brace pattern and/or glob (`/data/laion-{00000..00999}.tar`, `s3://bucket/train-*.tar`), expanded in
order (brace alternatives in the order written, glob matches sorted). The location ends at the first comma outside
braces; the options follow it. Shards are uncompressed tar files, as WebDataset writes them.

Nothing is ever extracted. Each shard is indexed once, lazily, by reading its tar headers in order (seeking past
the data); members are grouped into samples by key, WebDataset's way: `dir/000123.jpg` and `dir/000123.cls` are
the sample `dir/000123` with the members `jpg` and `cls`. An image is then read back as one byte range of its
shard, so any image can be read without the ones before it. Member names are only ever used as keys: an absolute
path or `..` in a name writes nothing and reads nothing outside the shard.

Each sample is one image, id `SHARD/KEY` (`laion-00001.tar/000123`, the shard relative to the folder holding
all the shards). Its image is the member `image` names (default: the first of jpg, jpeg, png, webp it has); its
label is an integer, from a member holding the number as text (`label=cls`) or a field of a JSON member
(`label=json:label`); a sample without that member has label -1. A sample with no image, a member declaring
more than `MAX_MEMBER_BYTES`, an image that does not decode, or a shard whose tar structure breaks off is a record
with an error (skipped or fatal under the harvest's bad-file policy), never an exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, cast

import fsspec
from braceexpand import braceexpand
from fsspec import AbstractFileSystem

from visae.activation_store.sources.base import (
    ImageRecord,
    ImageSource,
    check_options,
    register_source,
    split_location,
)
from visae.activation_store.sources.decode import bytes_record
from visae.activation_store.store import resolve_storage_options

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MAX_MEMBER_BYTES = 64 * 2**20
"""Members declaring more bytes than this (64 MiB) are refused as decompression bombs, from the tar header, before
any of their data is read."""
TAIL_BYTES = 20 * 512 * 2
"""The most bytes a well-formed tar may hold after its last member: the end-of-archive blocks, padded to a record."""
OPTIONS = {"image": None, "label": None}
_KEY_AND_EXTENSION = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # WebDataset's split at the basename's first dot


@dataclass
class Sample:
    """One sample of a shard: its members' byte ranges (data offset, size), by lower-case extension."""

    key: str
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None  # set for a sample that stands for a broken part of the shard


def expand_shards(pattern: str, fs: AbstractFileSystem) -> list[str]:
    """The shard paths a brace pattern and/or glob names, in order, without repeats."""
    paths: list[str] = []
    for part in braceexpand(pattern):
        paths += sorted(str(p) for p in fs.glob(part)) if any(c in part for c in "*?[") else [part]
    return list(dict.fromkeys(paths))


def index_shard(fs: AbstractFileSystem, path: str, size: int) -> list[Sample]:
    """The samples of one shard, from its tar headers; a broken or truncated shard ends with an error sample."""
    samples: dict[str, Sample] = {}
    last = "the start"
    try:
        with fs.open(path, "rb") as file, tarfile.open(fileobj=cast(BinaryIO, file), mode="r:") as tar:
            for member in tar:  # reads each header and seeks past the data: nothing is extracted
                last = repr(member.name)
                match = _KEY_AND_EXTENSION.match(member.name)
                if not member.isfile() or match is None:
                    continue
                key, extension = match[1], match[2].lower()
                sample = samples.setdefault(key, Sample(key))
                if member.offset_data + member.size > size:
                    sample.error = f"truncated shard: member {member.name!r} ends past the shard's {size} bytes"
                sample.members[extension] = (member.offset_data, member.size)
            file.seek(tar.offset)  # tarfile stops quietly at a broken header: what follows must be the zero padding
            tail = file.read(TAIL_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        return [*samples.values(), Sample("", error=f"unreadable tar data after {last}: {e}")]
    if len(tail) > TAIL_BYTES or any(tail):
        samples[""] = Sample("", error=f"unreadable tar data after {last}, at byte {tar.offset}")
    return list(samples.values())


def shard_version(info: dict) -> list:
    """[size, ETag on an object store or mtime on disk] of a listed shard; [-1, "None"] for one not listed."""
    return [info.get("size", -1), str(info.get("ETag") or info.get("mtime"))]


class WebDatasetSource(ImageSource):
    """Samples of WebDataset shards in shard order, then in the order of their first member within a shard."""

    def __init__(self, pattern: str, image: str | None = None, label: str | None = None):
        self.fs, root = fsspec.core.url_to_fs(pattern, **(resolve_storage_options(pattern, None) or {}))
        self.protocol = pattern.split("://")[0] + "://" if "://" in pattern else ""
        pattern = pattern if self.protocol else os.path.abspath(os.path.expanduser(pattern))
        self.image_extensions = (image,) if image else IMAGE_EXTENSIONS
        self.label = label
        self.spec = "wds:" + ",".join([pattern] + [f"{k}={v}" for k, v in (("image", image), ("label", label)) if v])
        self.paths = expand_shards(root if self.protocol else pattern, self.fs)
        self.sizes = self._sizes()
        parents = {os.path.dirname(p) for p in self.paths}
        self.names = [os.path.relpath(p, os.path.commonpath(list(parents))) for p in self.paths]
        self._samples: list[tuple[int, Sample]] = []  # (shard, sample) of the shards indexed so far
        self._indexed = 0
        self._lock = threading.Lock()

    def _sizes(self) -> list[int]:
        infos = self._listing()
        missing = [p for p in self.paths if p not in infos]
        if not self.paths or missing:
            raise FileNotFoundError(f"no WebDataset shard at {self.protocol}{(missing or [self.spec])[0]}"
                                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; check the "
                                    "pattern, e.g. 'wds:/data/shard-{00000..00099}.tar'")
        return [int(infos[p]["size"]) for p in self.paths]

    def _listing(self) -> dict[str, dict]:
        """Size and version (ETag or mtime) of each shard: one listing per folder, not one request per shard."""
        infos = {}
        for parent in dict.fromkeys(os.path.dirname(p) for p in self.paths):
            with contextlib.suppress(FileNotFoundError):
                listing = self.fs.ls(parent, detail=True, refresh=True)
                infos.update({self.fs._strip_protocol(info["name"]): info for info in listing})
        return infos

    def fingerprint(self) -> str:
        infos = self._listing()
        versions = [[name, *shard_version(infos.get(path, {}))] for name, path in zip(self.names, self.paths)]
        return hashlib.sha256(json.dumps([self.spec, versions]).encode()).hexdigest()

    def __len__(self) -> int:
        self._index_until(lambda: False)
        return len(self._samples)

    def _index_until(self, enough: Callable[[], bool]) -> None:
        """Index shards in order until `enough()` holds or every shard is indexed (thread-safe)."""
        with self._lock:
            while not enough() and self._indexed < len(self.paths):
                shard = self._indexed
                self._samples += [(shard, s) for s in index_shard(self.fs, self.paths[shard], self.sizes[shard])]
                self._indexed += 1

    def __getitem__(self, i: int) -> ImageRecord:
        if i < 0:
            i += len(self)
        self._index_until(lambda: i < len(self._samples))
        if not 0 <= i < len(self._samples):
            raise IndexError(f"image index {i} out of range for a source of {len(self)} images")
        shard, sample = self._samples[i]
        image_id = f"{self.names[shard]}/{sample.key}" if sample.key else self.names[shard]
        try:
            if sample.error:
                raise ValueError(sample.error)
            label = self._label(shard, sample)
            data = self._read(shard, sample, self._image_extension(sample))
        except Exception as e:  # a broken sample or a vanished shard is data to record, never a crash
            return ImageRecord(image_id, None, error=f"{e}" if isinstance(e, ValueError) else repr(e))
        return bytes_record(image_id, data, label)

    def _image_extension(self, sample: Sample) -> str:
        found = [e for e in self.image_extensions if e in sample.members]
        if not found:
            raise ValueError(f"no image in the sample (looked for {', '.join(self.image_extensions)}; it has "
                             f"{', '.join(sample.members) or 'no members'})")
        return found[0]

    def _label(self, shard: int, sample: Sample) -> int:
        extension, _, key = (self.label or "").partition(":")
        if not extension or extension not in sample.members:
            return -1  # no label asked for, or this sample has none
        text = self._read(shard, sample, extension).decode("utf-8", "replace")
        value = text.strip()
        if key:
            fields = json.loads(text)
            value = fields.get(key) if isinstance(fields, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.removeprefix("-").isdigit():
            return int(value)
        raise ValueError(f"the label {self.label} is {value!r}, not an integer")

    def _read(self, shard: int, sample: Sample, extension: str) -> bytes:
        if extension not in sample.members:
            raise ValueError(f"the sample has no {extension} member (it has {', '.join(sample.members)})")
        offset, size = sample.members[extension]
        if size > MAX_MEMBER_BYTES:
            raise ValueError(f"decompression bomb: the {extension} member declares {size} bytes, over the limit of "
                             f"{MAX_MEMBER_BYTES}")
        path = self.paths[shard]
        try:
            return self.fs.cat_file(path, start=offset, end=offset + size)
        except FileNotFoundError:
            raise ValueError(f"the shard {self.protocol}{path} is gone") from None


@register_source("wds")
def open_webdataset(text: str) -> WebDatasetSource:
    pattern, options = split_location(text)
    options = check_options("wds", options, OPTIONS, "wds:/data/shard-{000..009}.tar,image=jpg,label=cls")
    return WebDatasetSource(pattern, **{k: None if v is None else str(v) for k, v in options.items()})
