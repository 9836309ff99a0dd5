"""The activation store: one Zarr v3 group per harvest (docs/activation-store.md).

Layout::

    zarr.json                 group attributes: format, model, preprocessing, source, token layout of the kept
                              tokens, hooks, dtype, n_images, chunk_images, fingerprint, `complete`, cached stats
    acts/<hook>               [n_images, n_tokens_kept, d]; float16, or bfloat16 stored as int16 with the array
                              attribute `logical_dtype: bfloat16` (zarr has no bf16 type; the view is bit-exact)
    done                      bool [n_chunks], one storage object per element: the per-chunk done-mask
    images/ids                str  [n_images]  the source's id of each image (a path or an index)
    images/source_index       int64 [n_images] where each image sits in its source
    images/labels             int64 [n_images] (-1 where the source has none)
    images/factors/<name>     int32 [n_images] ground-truth factor value indices, where the source has them
    images/patch_labels/<name> int16 [n_images, rows, cols] (-1 = background), where the source has them; the
                              `segmentation` attribute names the one that is a segmentation
    images/skipped/ids, images/skipped/reasons   str [n_skipped] files the harvest skipped, and why

Skipped (broken) files take no slot: `n_images` counts only images that were harvested, and `images/ids` names
them. Chunks hold `chunk_images` consecutive images (the harvest batch), so writers that own disjoint chunks
never share a storage object; all arrays are allocated in full before any activation is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, cast

import numpy as np
import zarr
from filelock import FileLock, Timeout
from zarr.codecs import ZstdCodec
from zarr.core.buffer import default_buffer_prototype

from visae.activation_store.layout import TokenLayout

FORMAT = "visae-activation-store"
# The store layout version this code writes and the newest it reads (docs/activation-store.md). A store without
# the attribute predates it and is read as version 1; a newer version is refused.
FORMAT_VERSION = 1
DTYPES = ("float16", "bfloat16")
COMPRESSIONS = ("none", "zstd")
_STORAGE_DTYPE = {"float16": "float16", "bfloat16": "int16"}
# Attributes that say what a store holds: a resumed harvest must match all of them.
IDENTITY_KEYS = ("model", "preprocess", "source", "token_kind", "layout", "hooks", "dtype", "compression",
                 "chunk_images", "n_images_requested", "bad_files")
# Attributes a reader needs; a store lacking any of them is refused.
REQUIRED_ATTRS = ("model", "source", "token_kind", "layout", "hooks", "dtype", "chunk_images", "n_images",
                  "fingerprint")
# zarr's access modes (its `AccessModeLiteral`): read, read/write, create or open, overwrite, create only.
AccessMode = Literal["r", "r+", "a", "w", "w-"]


def is_remote(path: str) -> bool:
    return "://" in str(path)


def lock_path(path: str) -> str:
    """The writer lock of a local store: a file beside it (not inside: creating a store clears its folder)."""
    return os.path.abspath(str(path)).rstrip(os.sep) + ".lock"


@contextlib.contextmanager
def writer_lock(path: str, wait_message: bool = True) -> Iterator[None]:
    """Hold the store's writer lock (an OS file lock, released even if the process dies). Remote (`s3://`)
    stores take none: object stores offer no lock that every writer honours (docs/activation-store.md)."""
    if is_remote(path):
        yield
        return
    os.makedirs(os.path.dirname(lock_path(path)) or ".", exist_ok=True)
    lock = FileLock(lock_path(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if wait_message:
            print(f"another harvest is writing {path} (lock {lock_path(path)}); waiting for it to finish",
                  file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def resolve_storage_options(path: str, storage_options: dict | None) -> dict | None:
    """fsspec options for a remote store; an S3 endpoint may come from `AWS_ENDPOINT_URL` (e.g. seaweedfs, MinIO)."""
    if not is_remote(path):
        return None
    options = dict(storage_options or {})
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if str(path).startswith("s3://") and endpoint and "endpoint_url" not in options.get("client_kwargs", {}):
        options["client_kwargs"] = {**options.get("client_kwargs", {}), "endpoint_url": endpoint}
    return options


def open_group(path: str, mode: AccessMode, storage_options: dict | None = None, attributes: dict | None = None
               ) -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, storage_options=resolve_storage_options(path, storage_options),
                           zarr_format=3, attributes=attributes)


def _array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at `path` in `group` (indexing a group may also give a sub-group)."""
    member = group[path]
    if not isinstance(member, zarr.Array):
        raise TypeError(f"{path} in the activation store is a group where an array belongs; the store is damaged")
    return member


def _ndarray(values: object) -> np.ndarray:
    """A slice read from a zarr array: zarr types every read as `NDArrayLikeOrScalar` (any buffer class, any
    selection), but slicing an array into zarr's default (numpy) buffer gives a numpy array."""
    return cast(np.ndarray, values)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values held as int16 -> float32 (bf16 is the upper half of an fp32)."""
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def fingerprint_of(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ImageTable:
    """The per-image metadata written once, when a store is created."""

    ids: list[str]
    source_index: np.ndarray
    labels: np.ndarray
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    patch_labels: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class ActivationStore:
    """A harvested activation store, local or at `s3://bucket/path`."""

    def __init__(self, group: zarr.Group, path: str, storage_options: dict | None = None):
        self.group = group
        self.path = str(path)
        self.storage_options = storage_options

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, path: str, storage_options: dict | None = None, mode: AccessMode = "r") -> ActivationStore:
        """Open an existing store; refuses paths that are not a fully created visae store."""
        try:
            group = open_group(path, mode, storage_options)
        except FileNotFoundError:
            raise FileNotFoundError(f"no activation store at {path}; create one with `visae harvest --out {path}`")
        attrs = group.attrs
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is a Zarr group but not a visae activation store (no format={FORMAT!r})")
        version = attrs.get("format_version", 1)  # stores written before the attribute existed are version 1
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{path} has an invalid format_version {version!r} (expected a positive integer); "
                             "the store is damaged: harvest it again")
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} has activation-store format version {version}, newer than version "
                             f"{FORMAT_VERSION}, the newest this visae reads; upgrade visae (pip install -U visae)")
        if not attrs.get("initialized", False):
            raise ValueError(f"the store at {path} was never fully created (a harvest was interrupted while "
                             "creating it); rerun the harvest command to recreate it")
        missing = [key for key in REQUIRED_ATTRS if key not in attrs]
        if missing:
            raise ValueError(f"{path} lacks the store attribute(s) {', '.join(missing)} that every visae activation "
                             "store records; the store is damaged: harvest it again")
        return cls(group, path, storage_options)

    @classmethod
    def create(cls, path: str, attrs: dict, hook_dims: dict[str, int], images: ImageTable,
               storage_options: dict | None = None) -> ActivationStore:
        """Allocate a whole store: every array at full size, image metadata written, done-mask empty.

        `attrs` must hold the identity keys (`IDENTITY_KEYS`). The group is marked `initialized` last, so an
        interrupted creation is recognised and redone rather than mistaken for a store."""
        dtype, compression, chunk = attrs["dtype"], attrs["compression"], int(attrs["chunk_images"])
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        n_images, n_tokens = len(images), int(attrs["layout"]["n_tokens"])
        if n_images == 0:
            raise ValueError("no image could be read from the source, nothing to harvest")
        identity = {key: attrs[key] for key in IDENTITY_KEYS}
        full_attrs = {**attrs, "format": FORMAT, "format_version": FORMAT_VERSION, "n_images": n_images,
                      "fingerprint": fingerprint_of({**identity, "n_images": n_images}), "complete": False,
                      "initialized": False, "stats": {}}
        group = open_group(path, "w", storage_options, attributes=full_attrs)
        compressors = ZstdCodec(level=3) if compression == "zstd" else None
        for hook, d in hook_dims.items():
            # every written chunk is stored, even an all-zero one, so a missing chunk object always means damage
            arr = group.create_array(f"acts/{hook}", shape=(n_images, n_tokens, d), chunks=(chunk, n_tokens, d),
                                     dtype=_STORAGE_DTYPE[dtype], compressors=compressors, fill_value=0,
                                     config={"write_empty_chunks": True})
            arr.attrs["logical_dtype"] = dtype
        n_chunks = -(-n_images // chunk)
        group.create_array("done", shape=(n_chunks,), chunks=(1,), dtype=bool, fill_value=False, compressors=None)
        _write_images(group, images)
        group.attrs["initialized"] = True
        return cls(group, path, storage_options)

    # ------------------------------------------------------------------ metadata
    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def model_spec(self) -> str:
        return self.attrs["model"]["spec"]

    @property
    def source_spec(self) -> str:
        return self.attrs["source"]["spec"]

    @property
    def layout(self) -> TokenLayout:
        """Layout of the tokens kept in the store."""
        return TokenLayout.from_dict(self.attrs["layout"])

    @property
    def token_kind(self) -> str:
        return self.attrs["token_kind"]

    @property
    def hooks(self) -> list[str]:
        return list(self.attrs["hooks"])

    @property
    def n_images(self) -> int:
        return int(self.attrs["n_images"])

    @property
    def chunk_images(self) -> int:
        return int(self.attrs["chunk_images"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_images // self.chunk_images)

    @property
    def dtype(self) -> str:
        return self.attrs["dtype"]

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def label_names(self) -> list[str] | None:
        return self.attrs["source"].get("label_names")

    @property
    def factor_values(self) -> dict[str, list[str]]:
        return dict(self.attrs["source"].get("factor_values") or {})

    @property
    def segmentation(self) -> dict | None:
        """Which patch-label array is a segmentation ({"factor", "background"}); None when none is (or for stores
        written before the attribute existed)."""
        return self.attrs.get("segmentation")

    def d(self, hook: str) -> int:
        return int(self.acts(hook).shape[2])

    def acts(self, hook: str) -> zarr.Array:
        if hook not in self.hooks:
            raise ValueError(f"hook {hook!r} is not in the store at {self.path}; it holds {', '.join(self.hooks)}")
        return _array(self.group, f"acts/{hook}")

    def read(self, hook: str, start: int, stop: int) -> np.ndarray:
        """Activations of images [start, stop) as float32 [n, n_tokens_kept, d]."""
        raw = _ndarray(self.acts(hook)[start:stop])
        return bf16_bits_to_float32(raw) if self.dtype == "bfloat16" else raw.astype(np.float32)

    def read_raw(self, hook: str, start: int, stop: int) -> np.ndarray:
        """Activations as stored (float16, or int16 holding bfloat16 bits)."""
        return _ndarray(self.acts(hook)[start:stop])

    def read_raw_into(self, hook: str, start: int, stop: int, out: np.ndarray) -> None:
        """`read_raw` decoded straight into `out` ([stop - start, n_tokens_kept, d], C-contiguous, the storage
        dtype: float16 or int16), e.g. a view of pinned staging memory, with no intermediate array."""
        array = self.acts(hook)
        if out.shape != (stop - start, *array.shape[1:]) or out.dtype != array.dtype or not out.flags.c_contiguous:
            raise ValueError(f"read_raw_into needs a C-contiguous {array.dtype} array of shape "
                             f"{(stop - start, *array.shape[1:])}, got {out.dtype} {out.shape}")
        array.get_basic_selection(slice(start, stop), out=default_buffer_prototype().nd_buffer.from_numpy_array(out))

    @cached_property
    def image_ids(self) -> np.ndarray:
        return _ndarray(_array(self.group, "images/ids")[:])

    @cached_property
    def source_index(self) -> np.ndarray:
        return _ndarray(_array(self.group, "images/source_index")[:])

    @cached_property
    def labels(self) -> np.ndarray:
        return _ndarray(_array(self.group, "images/labels")[:])

    @cached_property
    def factors(self) -> dict[str, np.ndarray]:
        return _read_members(self.group, "images/factors")

    @cached_property
    def patch_labels(self) -> dict[str, np.ndarray]:
        return _read_members(self.group, "images/patch_labels")

    @cached_property
    def skipped(self) -> list[tuple[str, str]]:
        ids = _ndarray(_array(self.group, "images/skipped/ids")[:])
        reasons = _ndarray(_array(self.group, "images/skipped/reasons")[:])
        return list(zip(ids.tolist(), reasons.tolist()))

    # ------------------------------------------------------------------ chunks and the done-mask
    def chunk_range(self, k: int) -> tuple[int, int]:
        start = k * self.chunk_images
        return start, min(start + self.chunk_images, self.n_images)

    def done_mask(self) -> np.ndarray:
        return _ndarray(_array(self.group, "done")[:])

    def write_chunk(self, k: int, acts: dict[str, np.ndarray]) -> None:
        """Write every hook's activations of chunk k, then mark it done (so a crash never marks a partial chunk)."""
        start, stop = self.chunk_range(k)
        for hook, values in acts.items():
            _array(self.group, f"acts/{hook}")[start:stop] = values
        _array(self.group, "done")[k] = True

    def mark_complete(self) -> None:
        missing = np.flatnonzero(~self.done_mask())
        if missing.size:
            raise RuntimeError(f"cannot mark {self.path} complete: {missing.size} chunks are not written yet")
        self.group.attrs["complete"] = True

    # ------------------------------------------------------------------ cached statistics
    def cached_stats(self, key: str) -> dict | None:
        return self.attrs.get("stats", {}).get(key)

    def cache_stats(self, key: str, value: dict) -> None:
        """Store statistics in the group attributes (skipped silently when the store is read-only to us)."""
        try:
            group = open_group(self.path, "r+", self.storage_options)
            stats = group.attrs.get("stats", {})
            if not isinstance(stats, Mapping):
                raise TypeError(f"{self.path}: the `stats` attribute is not a mapping; the store is damaged")
            group.attrs["stats"] = {**stats, key: value}
        except (PermissionError, ValueError, OSError):
            return
        self.group = open_group(self.path, "r", self.storage_options)

    def __repr__(self) -> str:
        return (f"ActivationStore({self.path!r}, model={self.model_spec!r}, n_images={self.n_images}, "
                f"tokens={self.token_kind}[{self.layout.n_tokens}], hooks={self.hooks}, dtype={self.dtype}, "
                f"complete={self.complete})")


def _write_images(group: zarr.Group, images: ImageTable) -> None:
    n = len(images)
    group.create_array("images/ids", shape=(n,), dtype=str)[:] = np.asarray(images.ids, dtype=str)
    group.create_array("images/source_index", shape=(n,), dtype="int64")[:] = np.asarray(images.source_index)
    group.create_array("images/labels", shape=(n,), dtype="int64")[:] = np.asarray(images.labels)
    group.require_group("images/factors")
    for name, values in images.factors.items():
        group.create_array(f"images/factors/{name}", shape=(n,), dtype="int32")[:] = np.asarray(values)
    group.require_group("images/patch_labels")
    for name, values in images.patch_labels.items():
        values = np.asarray(values, dtype=np.int16)
        group.create_array(f"images/patch_labels/{name}", shape=values.shape, dtype="int16")[:] = values
    skipped = len(images.skipped)
    ids = group.create_array("images/skipped/ids", shape=(skipped,), dtype=str)
    reasons = group.create_array("images/skipped/reasons", shape=(skipped,), dtype=str)
    if skipped:
        ids[:] = np.asarray([s[0] for s in images.skipped], dtype=str)
        reasons[:] = np.asarray([s[1] for s in images.skipped], dtype=str)


def _read_members(group: zarr.Group, path: str) -> dict[str, np.ndarray]:
    if path not in group:
        return {}
    sub = group[path]
    if not isinstance(sub, zarr.Group):
        raise TypeError(f"{path} in the activation store is an array where a group belongs; the store is damaged")
    return {name: _ndarray(arr[:]) for name, arr in sorted(sub.arrays())}
