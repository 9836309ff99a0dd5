"""Harvest a vision model's activations at several hook points into an activation store.

One forward pass per batch captures every hook (stopping after the deepest hooked block); a writer thread stores
the previous batch while the next one runs, and decoding threads prepare the batches after that. On a GPU the
forward pass runs under autocast in the stored dtype (float16 or bfloat16), the batches of pixels are staged in
pinned memory, and each batch's activations are cast to the stored dtype on the GPU and copied to pinned host
buffers with non-blocking copies on a side stream, so the copy overlaps the next forward pass and the writer thread's
Zarr writes overlap both. On the CPU the model runs in float32, as before. A batch is one
store chunk, so every chunk is computed from exactly the same images whether or not the harvest was interrupted,
which makes a resumed store identical, array by array, to an uninterrupted one.

Crash safety: the store is created in full first (arrays allocated, image metadata written, `initialized` set
last); each chunk is marked in the done-mask only after all its hooks are written; `complete: true` is set only
once every chunk is done. Rerunning the same command writes only the chunks not yet done.

Bad files: the store is created after a scan that reads every candidate image once. Under `bad_files="skip"` the
unreadable ones take no slot in the store (so `n_images` counts only good images, and the first `n_images` good
images are kept); they are listed with their reasons in `images/skipped`. Under `"fail"` the scan stops at the
first one with an error naming it.

Several processes: under torchrun, rank 0 scans and creates the store, then every rank harvests the chunks
k with k % world_size == rank (disjoint, chunk-aligned, on a preallocated store: docs/activation-store.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.models import load_model
from visae.activation_store.models.base import VisionModel
from visae.activation_store.sources import ImageSource, open_source
from visae.activation_store.store import IDENTITY_KEYS, ActivationStore, ImageTable, is_remote, open_group, writer_lock
from visae.activation_store.store import _array as _array_of
from visae.activation_store.verify import damaged_chunks
from visae.core import distributed
from visae.core.atomic import check_output_folder
from visae.core.devices import resolve_device

SCAN_BLOCK = 256


def harvest(cfg: HarvestConfig, model: VisionModel | None = None) -> ActivationStore:
    """Run (or resume) a harvest and return the complete store.

    `model` may be passed already loaded (it must be the one `cfg.model` and `cfg.weights` name)."""
    check_output_folder(cfg.out, "--out")
    model = model or load_model(cfg.model, cfg.weights, device=str(resolve_device(cfg.device)))
    hooks = list(dict.fromkeys(model.canonical(h) for h in cfg.hooks))
    token_index = model.layout.indices(cfg.tokens)
    source = open_source(cfg.images)
    attrs = store_attrs(cfg, model, source, hooks, token_index)
    with distributed.joined_process_group("gloo"):
        rank, world = distributed.rank(), distributed.world_size()
        # Rank 0 holds the store's writer lock for the whole harvest: a second harvest into the same --out waits,
        # then finds the store written (same identity: it resumes, with nothing left to do) or is refused (another
        # identity). The other ranks write only chunks rank 0 hands out, inside the lock it holds.
        lock = writer_lock(cfg.out) if rank == 0 else contextlib.nullcontext()
        with lock:
            store = open_or_create(cfg, attrs, model, source, hooks) if rank == 0 else None
            distributed.barrier()
            return _harvest_store(cfg, model, source, store, hooks, token_index, rank, world)


def _harvest_store(cfg: HarvestConfig, model: VisionModel, source: ImageSource, store: ActivationStore | None,
                   hooks: list[str], token_index: list[int], rank: int, world: int) -> ActivationStore:
    """Every rank's part of the harvest, once rank 0 has opened or created the store (`store` on rank 0)."""
    if store is None:
        store = ActivationStore.open(cfg.out, cfg.storage_options, mode="r+")
    done = store.done_mask()
    chunks = [k for k in range(store.n_chunks) if k % world == rank and not done[k]]
    if chunks:
        _harvest_chunks(model, source, store, chunks, hooks, token_index, cfg, show=rank == 0)
    distributed.barrier()
    if rank == 0:
        store.mark_complete()
    distributed.barrier()
    return ActivationStore.open(cfg.out, cfg.storage_options)


def store_attrs(cfg: HarvestConfig, model: VisionModel, source: ImageSource, hooks: list[str],
                token_index: list[int]) -> dict:
    """The store's group attributes (JSON-normalised); `IDENTITY_KEYS` among them decide whether a rerun may resume."""
    return json.loads(json.dumps({
        "model": {"spec": model.spec, "weights_sha256": model.weights_sha256, "state_sha256": state_sha256(model),
                  "n_blocks": model.n_blocks, "d_model": model.d_model, "layout": model.layout.to_dict()},
        "preprocess": model.preprocess.to_dict(),
        "source": {"spec": source.spec, "fingerprint": source.fingerprint(), "label_names": source.label_names,
                   "factor_names": list(source.factor_names),
                   "factor_values": {k: list(v) for k, v in source.factor_values.items()}},
        "token_kind": cfg.tokens,
        "token_positions": list(token_index),  # where the kept tokens sit in the model's sequence
        "layout": model.layout.subset(cfg.tokens).to_dict(),
        "hooks": hooks,
        "hook_dims": {h: model.hook_dim(h) for h in hooks},
        "dtype": cfg.dtype,
        "compression": cfg.compression,
        "chunk_images": cfg.batch_size,
        "n_images_requested": cfg.n_images,
        "bad_files": cfg.bad_files,
        "segmentation": source.segmentation,  # not an identity key: stores written before it existed still resume
    }))


def state_sha256(model: VisionModel) -> str:
    """Hash of the weights actually in the model, so that even library or random-init weights that no file
    names are told apart: a resume never mixes activations of two different models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def open_or_create(cfg: HarvestConfig, attrs: dict, model: VisionModel, source: ImageSource,
                   hooks: list[str]) -> ActivationStore:
    """Reuse a matching store (refusing one made differently), or scan the source and create a new one."""
    try:
        group = open_group(cfg.out, "r", cfg.storage_options)
    except FileNotFoundError:
        group = None
    if group is None and not is_remote(cfg.out) and os.path.exists(cfg.out) and os.listdir(cfg.out):
        raise FileExistsError(f"{cfg.out} exists and is not an activation store; choose another --out")
    if group is not None and group.attrs.get("initialized", False):
        store = ActivationStore.open(cfg.out, cfg.storage_options, mode="r+")
        check_resumable(store, attrs)
        reopen_damaged_chunks(store)
        return store
    if group is not None and group.attrs.get("format") != "visae-activation-store":
        raise FileExistsError(f"{cfg.out} is a Zarr group that is not an activation store; choose another --out")
    images = scan_source(source, cfg.n_images, cfg.bad_files, cfg.num_workers, model.layout.grid, cfg.progress,
                         crop_fraction=model.preprocess.crop / model.preprocess.size)
    hook_dims = {h: model.hook_dim(h) for h in hooks}
    return ActivationStore.create(cfg.out, attrs, hook_dims, images, cfg.storage_options)


def check_resumable(store: ActivationStore, attrs: dict) -> None:
    """Refuse to write into a store whose identity (model and weights hashes, source and its fingerprint, hooks,
    tokens, dtype, ...) is not this run's. Run under the store's writer lock, so a harvest that held it before
    (even one running at the same time) has recorded its identity."""
    existing = store.attrs
    differ = [key for key in IDENTITY_KEYS if existing.get(key) != attrs[key]]
    if differ:
        details = "; ".join(f"{key}: store has {existing.get(key)!r}, this run asks for {attrs[key]!r}"
                            for key in differ)
        raise ValueError(f"refusing to resume into {store.path}: another harvest (earlier, or still running) wrote "
                         f"it with another identity ({details}). Choose another --out, or delete the store (and "
                         "its .lock file) to start over")


def reopen_damaged_chunks(store: ActivationStore) -> None:
    """Mark undone the chunks the done-mask claims but whose objects are missing or truncated (the cheap checks
    of `activation_store.verify`), so this resumed harvest writes them again."""
    damaged = damaged_chunks(store)
    if damaged:
        print(f"{store.path}: chunk(s) {', '.join(map(str, damaged))} are marked done but their files are missing "
              "or truncated; writing them again", file=sys.stderr, flush=True)
        done = _array_of(store.group, "done")
        for k in damaged:
            done[k] = False
        store.group.attrs["complete"] = False


def scan_source(source: ImageSource, n_wanted: int | None, bad_files: str, workers: int,
                grid: tuple[int, int], progress: bool = True, crop_fraction: float = 1.0) -> ImageTable:
    """Read candidate images in order until `n_wanted` readable ones are found (all of them if None); patch labels
    are taken at `grid` over the centred square the model sees (`crop_fraction` of the shorter side)."""
    n_wanted = len(source) if n_wanted is None else n_wanted
    kept: list[int] = []
    ids, labels, skipped = [], [], []
    with (ThreadPoolExecutor(workers) as pool,
          tqdm(total=n_wanted, desc="scan images", unit="img", disable=not progress) as bar):
        for start in range(0, len(source), SCAN_BLOCK):
            indices = range(start, min(start + SCAN_BLOCK, len(source)))
            for i, (image_id, label, error) in zip(indices, pool.map(lambda i: _probe(source, i), indices)):
                if error is not None and bad_files == "fail":
                    raise ValueError(f"cannot read image {image_id}: {error}. Fix or remove the file, "
                                     "or harvest with --bad-files skip")
                if error is not None:
                    skipped.append((image_id, error))
                elif len(kept) < n_wanted:
                    kept.append(i)
                    ids.append(image_id)
                    labels.append(label)
                    bar.update(1)
            if len(kept) >= n_wanted:
                break
    factors = {name: np.asarray([source.factors(i)[name] for i in kept]) for name in source.factor_names}
    return ImageTable(ids, np.asarray(kept, dtype=np.int64), np.asarray(labels, dtype=np.int64), factors,
                      _patch_labels(source, kept, grid, crop_fraction), skipped)


def _probe(source: ImageSource, i: int) -> tuple[str, int, str | None]:
    """(id, label, error or None) of image i; the decoded pixels are freed at once."""
    record = source[i]
    error = None if record.image is not None else str(record.error or "unreadable image")
    return str(record.id), int(record.label), error


def _patch_labels(source: ImageSource, kept: list[int], grid: tuple[int, int],
                  crop_fraction: float) -> dict[str, np.ndarray]:
    if not kept or grid[0] * grid[1] == 0 or source.patch_labels(kept[0], grid, crop_fraction) is None:
        return {}
    per_image: list[dict[str, np.ndarray]] = []
    for i in kept:
        labels = source.patch_labels(i, grid, crop_fraction)
        if labels is None:
            raise ValueError(f"the source gives patch labels for image {kept[0]} but not for image {i}; a source "
                             "gives them for every image or for none")
        per_image.append(labels)
    return {name: np.stack([p[name] for p in per_image]).astype(np.int16) for name in per_image[0]}


def _harvest_chunks(model: VisionModel, source: ImageSource, store: ActivationStore, chunks: list[int],
                    hooks: list[str], token_index: list[int], cfg: HarvestConfig, show: bool) -> None:
    keep = None if token_index == list(range(model.layout.n_tokens)) else torch.tensor(token_index)
    device = model.device  # the model passed in (or loaded on cfg.device) decides
    cuda = device.type == "cuda"
    writer = ChunkWriter(store, hooks, keep, cfg.dtype, device)
    total = sum(stop - start for start, stop in map(store.chunk_range, chunks))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float16)
                if cuda else contextlib.nullcontext())
    with tqdm(total=total, desc="harvest", unit="img", disable=not (cfg.progress and show)) as bar:
        try:
            for k, pixels in _prefetch_batches(source, store, chunks, model, cfg.num_workers, pin=cuda):
                with torch.no_grad(), autocast:
                    cache = model.run_with_cache(pixels.to(device, non_blocking=cuda), hooks)
                writer.put(k, cache)
                bar.update(pixels.shape[0])
        finally:
            writer.close()


def _prefetch_batches(source: ImageSource, store: ActivationStore, chunks: list[int], model: VisionModel,
                      workers: int, lookahead: int = 2, pin: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """Decoded, preprocessed batches of the given chunks, with `lookahead` more chunks decoding in threads
    (stacked into pinned memory with `pin`, for a non-blocking copy to the GPU)."""
    source_index = store.source_index

    def load(i: int) -> torch.Tensor:
        record = source[int(i)]
        if record.image is None:
            raise ValueError(f"image {record.id} was readable when the store was created but is not now "
                             f"({record.error}); restore the file or harvest into a new store")
        return model.preprocess(record.image)

    with ThreadPoolExecutor(workers) as pool:
        pending: list[tuple[int, list[Future]]] = []
        for k in chunks + [None] * lookahead:
            if k is not None:
                start, stop = store.chunk_range(k)
                pending.append((k, [pool.submit(load, i) for i in source_index[start:stop]]))
            if len(pending) > lookahead or (k is None and pending):
                k_ready, futures = pending.pop(0)
                images = [f.result() for f in futures]
                batch = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=pin)
                yield k_ready, torch.stack(images, out=batch)


class ChunkWriter:
    """Writes chunks in a background thread through a bounded queue, so forward passes overlap Zarr writes.

    With a CUDA `device`, `put` casts the activations to the stored dtype on the GPU and starts their copy into
    pinned host buffers on a side stream (non-blocking); the writer thread waits for that copy, not the caller.
    At most `max_pending` + 2 chunks of host buffers are alive (queued, being written, being put)."""

    def __init__(self, store: ActivationStore, hooks: list[str], keep: torch.Tensor | None, dtype: str,
                 device: torch.device | None = None, max_pending: int = 2):
        self.store, self.hooks, self.keep, self.dtype = store, hooks, keep, dtype
        self.stream = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="chunk-writer")
        self.thread.start()

    def put(self, k: int, cache: dict[str, torch.Tensor]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((k, cache, None) if self.stream is None else (k, *self._copy_to_host(cache)))

    def _copy_to_host(self, cache: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.cuda.Event]:
        """Stored-dtype activations cast on the GPU, their copies to pinned host memory started on the side
        stream; returns the host tensors (valid once the event has completed) and the event."""
        assert self.stream is not None
        on_device = {h: self._storage_tensor(cache[h]) for h in self.hooks}
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))  # after the forward pass and casts
        host = {}
        with torch.cuda.stream(self.stream):
            for h, acts in on_device.items():
                host[h] = torch.empty(acts.shape, dtype=acts.dtype, pin_memory=True)
                host[h].copy_(acts, non_blocking=True)
                acts.record_stream(self.stream)  # not reused by the next forward pass before the copy is done
        copied = torch.cuda.Event()
        copied.record(self.stream)
        return host, copied

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure so the producer never blocks
            try:
                k, cache, copied = item
                if copied is not None:  # GPU: already cast, in pinned host memory once the copy is done
                    copied.synchronize()
                    self.store.write_chunk(k, {h: cache[h].numpy() for h in self.hooks})
                else:
                    self.store.write_chunk(k, {h: self._to_storage(cache[h]) for h in self.hooks})
            except BaseException as err:
                self.error = err

    def _storage_tensor(self, acts: torch.Tensor) -> torch.Tensor:
        """The kept tokens in the stored dtype (bfloat16 as its int16 bits), on the activations' device."""
        if self.keep is not None:
            acts = acts[:, self.keep.to(acts.device)]
        if self.dtype == "bfloat16":
            return acts.to(torch.bfloat16).view(torch.int16)
        return acts.to(torch.float16)

    def _to_storage(self, acts: torch.Tensor) -> np.ndarray:
        return self._storage_tensor(acts).cpu().numpy()
