"""Checking a store before trusting it (docs/activation-store.md, "Verification").

`store_problems` is the cheap pass run whenever training or evaluation opens a store: it reads the attributes,
the done-mask and one listing of each hook's chunk objects, never a chunk's contents. `chunk_problems` is the
full pass of `visae verify`: it reads every chunk the done-mask claims and checks that it decodes and that its
values are finite. Each problem names the store, the hook, the chunk and its image range, and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from visae.activation_store.store import _STORAGE_DTYPE, ActivationStore, resolve_storage_options

_HARVEST_AGAIN = ("harvest the store again into a new --out (a resumed harvest rewrites only the chunks that the "
                  "done-mask or the chunk files show missing)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where (hook, chunk and its images, when it is about one chunk) and what."""

    what: str
    fix: str
    hook: str | None = None
    chunk: int | None = None
    images: tuple[int, int] | None = None  # [start, stop)

    def describe(self, path: str) -> str:
        where = [f"hook {self.hook}"] if self.hook is not None else []
        if self.chunk is not None and self.images is not None:
            where.append(f"chunk {self.chunk} (images {self.images[0]}-{self.images[1] - 1})")
        prefix = f"{path}: " + (", ".join(where) + ": " if where else "")
        return f"{prefix}{self.what}; {self.fix}"


def check_store(store: ActivationStore) -> ActivationStore:
    """`store`, after the cheap checks; raises ValueError naming every problem found."""
    problems = store_problems(store)
    if problems:
        listed = "\n  ".join(p.describe(store.path) for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more (`visae verify {store.path}` lists them all)" \
            if len(problems) > 10 else ""
        raise ValueError(f"the activation store at {store.path} failed verification "
                         f"({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  {listed}{more}")
    return store


def store_problems(store: ActivationStore) -> list[Problem]:
    """The cheap checks: attributes against arrays, `complete` against the done-mask, every chunk the done-mask
    claims present (at its exact byte size when uncompressed). Reads no chunk."""
    problems = _attribute_problems(store)
    if problems:
        return problems  # the arrays do not match their description; chunk checks would only repeat it
    done = store.done_mask()
    if store.complete and not done.all():
        missing = np.flatnonzero(~done)
        problems.append(Problem(
            f"marked complete, but the done-mask has {missing.size} of {done.size} chunks unwritten "
            f"(first: chunk {int(missing[0])}, images {_images_text(store, int(missing[0]))})",
            "rerun the same `visae harvest` to write the missing chunks (it resumes)"))
    for hook in store.hooks:
        problems += _chunk_object_problems(store, hook, done)
    return problems


def chunk_problems(store: ActivationStore, progress: bool = True) -> Iterator[Problem]:
    """Read every chunk the done-mask claims, hook by hook: it must decode, with finite values only."""
    from tqdm.auto import tqdm

    done = np.flatnonzero(store.done_mask())
    with tqdm(total=len(done) * len(store.hooks), desc="verify chunks", unit="chunk", disable=not progress) as bar:
        for hook in store.hooks:
            for k in done.tolist():
                start, stop = store.chunk_range(k)
                try:
                    values = store.read(hook, start, stop)
                except Exception as err:  # a damaged chunk object fails in the codec, with any error type
                    yield Problem(f"the chunk cannot be read ({type(err).__name__}: {err})", _HARVEST_AGAIN, hook, k,
                                  (start, stop))
                else:
                    bad = ~np.isfinite(values)
                    if bad.any():
                        n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
                        first = int(np.flatnonzero(bad.any(axis=(1, 2)))[0]) + start
                        yield Problem(f"{n_nan} NaN and {n_inf} infinite values (first in image {first})",
                                      "the model produced them or the chunk is damaged: " + _HARVEST_AGAIN
                                      + " (if the model overflows, harvest with --dtype bfloat16)", hook, k,
                                      (start, stop))
                bar.update(1)


# ---------------------------------------------------------------------------------------------------- details
def _images_text(store: ActivationStore, k: int) -> str:
    start, stop = store.chunk_range(k)
    return f"{start}-{stop - 1}"


def _attribute_problems(store: ActivationStore) -> list[Problem]:
    attrs, problems = store.attrs, []
    harvest_again = "the store's attributes are damaged or were edited: harvest the store again into a new --out"
    n_images, chunk = store.n_images, store.chunk_images
    if n_images < 1 or chunk < 1:
        return [Problem(f"n_images {n_images} and chunk_images {chunk} must be positive", harvest_again)]
    try:
        layout = store.layout
    except (KeyError, TypeError, ValueError) as err:
        return [Problem(f"the `layout` attribute cannot be read ({err})", harvest_again)]
    n_tokens = layout.n_tokens
    positions = [*layout.patch_indices, *layout.register_indices,
                 *([] if layout.cls_index is None else [layout.cls_index])]
    outside = sorted({i for i in positions if not 0 <= i < n_tokens})
    if outside:
        problems.append(Problem(f"the layout places tokens at {outside}, outside the {n_tokens} tokens it declares",
                                harvest_again))
    if len(set(positions)) != len(positions):
        problems.append(Problem("the layout gives one token position two roles (cls, register, patch)",
                                harvest_again))
    rows, cols = layout.grid
    if rows * cols and len(layout.patch_indices) != rows * cols:
        problems.append(Problem(f"the layout has {len(layout.patch_indices)} patch indices for a {rows}x{cols} grid",
                                harvest_again))
    dtype = store.dtype
    if dtype not in _STORAGE_DTYPE:
        problems.append(Problem(f"unknown dtype attribute {dtype!r}", harvest_again))
    hook_dims = attrs.get("hook_dims") or {}
    for hook in store.hooks:
        try:
            array = store.acts(hook)
        except (KeyError, TypeError, FileNotFoundError) as err:
            problems.append(Problem(f"the array acts/{hook} is missing ({type(err).__name__})", harvest_again, hook))
            continue
        shape, d = tuple(array.shape), array.shape[2] if array.ndim == 3 else None
        if array.ndim != 3 or shape[:2] != (n_images, n_tokens):
            problems.append(Problem(f"acts/{hook} has shape {shape}, but the attributes say n_images={n_images} "
                                    f"and a layout of {n_tokens} tokens: [{n_images}, {n_tokens}, d]", harvest_again,
                                    hook))
        if hook in hook_dims and d != int(hook_dims[hook]):
            problems.append(Problem(f"acts/{hook} holds d={d}, but the attribute hook_dims says {hook_dims[hook]}",
                                    harvest_again, hook))
        if array.ndim == 3 and tuple(array.chunks) != (chunk, shape[1], shape[2]):
            problems.append(Problem(f"acts/{hook} is chunked {tuple(array.chunks)}, not "
                                    f"[chunk_images={chunk}, tokens, d]", harvest_again, hook))
        logical = array.attrs.get("logical_dtype")
        if dtype in _STORAGE_DTYPE and (str(array.dtype) != _STORAGE_DTYPE[dtype] or logical not in (None, dtype)):
            problems.append(Problem(f"the store's dtype attribute says {dtype}, but acts/{hook} is stored as "
                                    f"{array.dtype} with logical_dtype {logical!r} (a {dtype} store keeps "
                                    f"{_STORAGE_DTYPE[dtype]} with logical_dtype {dtype!r})", harvest_again, hook))
    done_shape = _shape(store, "done")
    if done_shape != (store.n_chunks,):
        problems.append(Problem(f"the done-mask has shape {done_shape}, but {n_images} images in chunks of {chunk} "
                                f"make {store.n_chunks} chunks", harvest_again))
    for name in ("images/ids", "images/source_index", "images/labels"):
        shape = _shape(store, name)
        length = shape[0] if shape else None
        if length != n_images:
            problems.append(Problem(f"{name} has {length} entries, but n_images is {n_images}", harvest_again))
    return problems


def damaged_chunks(store: ActivationStore) -> list[int]:
    """Chunks the done-mask claims whose objects are missing or of the wrong size (of any hook): a resumed
    harvest marks them undone and writes them again."""
    done = store.done_mask()
    return sorted({p.chunk for hook in store.hooks for p in _chunk_object_problems(store, hook, done)
                   if p.chunk is not None})


def _shape(store: ActivationStore, name: str) -> tuple[int, ...] | None:
    member = store.group.get(name)
    return tuple(member.shape) if isinstance(member, zarr.Array) else None


def _chunk_object_problems(store: ActivationStore, hook: str, done: np.ndarray) -> list[Problem]:
    """Every chunk of `hook` the done-mask claims must exist, at the exact encoded size when uncompressed."""
    array = store.acts(hook)
    sizes = _object_sizes(store, f"acts/{hook}")
    if sizes is None:
        return []  # a store this code cannot list (e.g. in memory): the full pass still reads every chunk
    expected = None if array.compressors else math.prod(array.chunks) * array.dtype.itemsize
    problems = []
    for k in np.flatnonzero(done).tolist():
        key = array.metadata.encode_chunk_key((k, 0, 0))
        size = sizes.get(key)
        if size is None:
            problems.append(Problem("the done-mask says this chunk was written but its file is missing (it would "
                                    "read as zeros)", f"rerun the same `visae harvest` to rewrite chunk {k}", hook, k,
                                    store.chunk_range(k)))
        elif expected is not None and size != expected:
            problems.append(Problem(f"the chunk file holds {size} bytes, not the {expected} of an uncompressed "
                                    "chunk (truncated or overwritten)",
                                    f"rerun the same `visae harvest` to rewrite chunk {k}", hook, k,
                                    store.chunk_range(k)))
    return problems


def _object_sizes(store: ActivationStore, array_path: str) -> dict[str, int] | None:
    """{chunk key: byte size} of the objects under one array, from one listing (local or fsspec)."""
    if not isinstance(store.group.store, (LocalStore, FsspecStore)):
        return None
    root = f"{store.path.rstrip('/')}/{array_path}"
    fs, fs_root = fsspec.core.url_to_fs(root, **(resolve_storage_options(store.path, store.storage_options) or {}))
    if not fs.exists(fs_root):
        return {}
    listing = fs.find(fs_root, detail=True)
    prefix = fs_root.rstrip("/") + "/"
    return {str(name)[len(prefix):]: int(info["size"]) for name, info in listing.items()
            if str(name).startswith(prefix) and str(name)[len(prefix):] != "zarr.json"}
