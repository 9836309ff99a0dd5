"""Shuffled token batches streamed from an activation store (docs/activation-store.md, "Reading").

Tokens of one image are strongly correlated, so an epoch is built like this, for each rank:

1. the store's chunks are permuted with `(seed, epoch)`, and rank r takes every world_size-th of them;
2. consecutive groups of those chunks ("fills", about `buffer_tokens` tokens, spanning many images) are read
   whole, the token filter is applied, and each fill is shuffled in RAM with `(seed, epoch, rank, fill)`;
3. the epoch's token stream is the concatenation of the shuffled fills, cut into `batch_size` batches; the last
   batch of an epoch may be smaller, so every token is served exactly once per epoch across all ranks.

Because every step is a pure function of `(seed, epoch, rank, world_size)`, the loader's state is just
`(epoch, position in the epoch's stream)`; resuming reads only the fill that holds that position.
A reader thread loads the next fill and a batcher thread cuts batches while the consumer trains.
"""

from __future__ import annotations

import atexit
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from visae.activation_store.layout import check_token_kind
from visae.activation_store.store import ActivationStore
from visae.core import distributed

_END = object()
# Loader threads still running: stopped and joined at interpreter exit, since a daemon thread killed
# inside a torch or zarr call aborts the process ("terminate called without an active exception").
_RUNNING: dict[threading.Thread, threading.Event] = {}


@atexit.register
def _stop_running_loaders() -> None:
    for worker, stop in list(_RUNNING.items()):
        stop.set()
        worker.join(timeout=10)


@dataclass(frozen=True)
class Fill:
    """A group of chunks read together: its position in the epoch stream and its token count."""

    index: int
    chunks: tuple[int, ...]
    start: int
    n_tokens: int


class ActivationLoader:
    """Iterates `Tensor[batch_size, d]` token batches of one hook and token kind.

    `epochs=None` iterates forever; otherwise it stops after that many epochs (counted from epoch 0).
    Under torch.distributed (or with explicit `rank`/`world_size`) each rank reads a disjoint set of chunks.
    """

    def __init__(self, store: ActivationStore | str, hook: str, tokens: str = "all", batch_size: int = 4096,
                 seed: int = 0, dtype: torch.dtype = torch.float32, epochs: int | None = None,
                 buffer_tokens: int = 2**17, prefetch_batches: int = 8, read_threads: int = 4,
                 rank: int | None = None, world_size: int | None = None, storage_options: dict | None = None):
        self.store = store if isinstance(store, ActivationStore) else ActivationStore.open(store, storage_options)
        if not self.store.complete:
            raise ValueError(f"the store at {self.store.path} is not complete; finish it by rerunning its harvest")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; choose torch.float32, torch.bfloat16 or torch.float16")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.hook, self.batch_size, self.seed, self.dtype, self.epochs = hook, batch_size, seed, dtype, epochs
        self.d = self.store.d(hook)
        self.tokens = check_token_kind(tokens)
        self.token_index = self._token_index(tokens)
        self.buffer_tokens, self.prefetch_batches, self.read_threads = buffer_tokens, prefetch_batches, read_threads
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        if self.world_size > self.store.n_chunks:
            raise ValueError(f"{self.world_size} ranks but the store has only {self.store.n_chunks} chunks; "
                             "harvest more images or use fewer ranks")
        self.epoch, self.position = 0, 0

    def _token_index(self, kind: str) -> np.ndarray | None:
        layout = self.store.layout
        try:
            index = layout.indices(kind)
        except ValueError as err:
            raise ValueError(f"{err} (the store at {self.store.path} keeps '{self.store.token_kind}' tokens)")
        if not index:
            raise ValueError(f"the store at {self.store.path} keeps no '{kind}' tokens (it holds "
                             f"'{self.store.token_kind}' tokens); choose another token kind or re-harvest")
        return None if index == list(range(layout.n_tokens)) else np.asarray(index)

    # ------------------------------------------------------------------ the epoch plan
    @property
    def tokens_per_image(self) -> int:
        return self.store.layout.n_tokens if self.token_index is None else len(self.token_index)

    @property
    def tokens_per_epoch(self) -> int:
        """Tokens in one epoch across all ranks."""
        return self.store.n_images * self.tokens_per_image

    def rank_chunks(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.store.n_chunks)
        return order[self.rank::self.world_size]

    def fills(self, epoch: int) -> list[Fill]:
        chunks = self.rank_chunks(epoch)
        per_chunk = self.store.chunk_images * self.tokens_per_image
        per_fill = max(1, -(-self.buffer_tokens // per_chunk))
        fills, start = [], 0
        for i in range(0, len(chunks), per_fill):
            group = tuple(int(k) for k in chunks[i:i + per_fill])
            n = sum(self._chunk_tokens(k) for k in group)
            fills.append(Fill(len(fills), group, start, n))
            start += n
        return fills

    def rank_tokens_per_epoch(self, epoch: int = 0) -> int:
        """Tokens this rank serves in `epoch` (ranks differ by at most one chunk)."""
        return sum(f.n_tokens for f in self.fills(epoch))

    def _chunk_tokens(self, k: int) -> int:
        start, stop = self.store.chunk_range(k)
        return (stop - start) * self.tokens_per_image

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "hook": self.hook, "tokens": self.tokens, "rank": self.rank, "world_size": self.world_size,
                "buffer_tokens": self.buffer_tokens, "store_fingerprint": self.store.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` was saved; the loader must be set up the same way."""
        for key in ("seed", "batch_size", "hook", "tokens", "rank", "world_size", "buffer_tokens"):
            if state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: the saved loader state has {key}={state[key]!r} but this loader "
                                 f"has {getattr(self, key)!r}; create the loader with the same settings")
        if state["store_fingerprint"] != self.store.fingerprint:
            raise ValueError(f"cannot resume: the saved loader state is for store {state['store_fingerprint']}, "
                             f"not {self.store.path} ({self.store.fingerprint})")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ------------------------------------------------------------------ iteration
    def __iter__(self):
        batches: queue.Queue = queue.Queue(maxsize=self.prefetch_batches)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(self.epoch, self.position, batches, stop),
                                  daemon=True, name="activation-loader")
        _RUNNING[worker] = stop
        worker.start()
        try:
            while True:
                item = batches.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                epoch, end, n_epoch, batch = item
                self.epoch, self.position = (epoch + 1, 0) if end == n_epoch else (epoch, end)
                yield batch
        finally:
            stop.set()
            _drain(batches)
            worker.join()
            _RUNNING.pop(worker, None)

    def _produce(self, epoch: int, position: int, out: queue.Queue, stop: threading.Event) -> None:
        try:
            while (self.epochs is None or epoch < self.epochs) and not stop.is_set():
                self._produce_epoch(epoch, position, out, stop)
                epoch, position = epoch + 1, 0
            _put(out, _END, stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(out, err, stop)

    def _produce_epoch(self, epoch: int, position: int, out: queue.Queue, stop: threading.Event) -> None:
        fills = [f for f in self.fills(epoch) if f.start + f.n_tokens > position]
        n_epoch = self.rank_tokens_per_epoch(epoch)
        pending: list[torch.Tensor] = []
        n_pending = 0
        for fill, data in self._read_ahead(fills):
            order = torch.from_numpy(np.random.default_rng([self.seed, epoch, self.rank, fill.index])
                                     .permutation(fill.n_tokens))
            offset = max(0, position - fill.start)
            while offset < fill.n_tokens:
                take = min(self.batch_size - n_pending, fill.n_tokens - offset)
                pending.append(data[order[offset:offset + take]])
                offset, n_pending = offset + take, n_pending + take
                end = fill.start + offset
                if n_pending == self.batch_size or end == n_epoch:
                    batch = (pending[0] if len(pending) == 1 else torch.cat(pending)).to(self.dtype)
                    if not _put(out, (epoch, end, n_epoch, batch), stop):
                        return
                    pending, n_pending = [], 0

    def _read_ahead(self, fills: list[Fill]):
        """Yield (fill, tokens) while the next fill is read in a background thread."""
        ready: queue.Queue = queue.Queue(maxsize=1)
        halt = threading.Event()

        def read_all():
            with ThreadPoolExecutor(self.read_threads) as pool:
                for fill in fills:
                    try:
                        item = (fill, torch.cat(list(pool.map(self._read_chunk, fill.chunks))))
                    except BaseException as err:
                        item = err
                    if not _put(ready, item, halt) or isinstance(item, BaseException):
                        return
            _put(ready, _END, halt)

        reader = threading.Thread(target=read_all, daemon=True, name="activation-reader")
        reader.start()
        try:
            while (item := ready.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            reader.join()

    def _read_chunk(self, k: int) -> torch.Tensor:
        """Chunk k's selected tokens, flattened to [n_tokens, d] in the stored dtype."""
        raw = self.store.read_raw(self.hook, *self.store.chunk_range(k))
        if self.token_index is not None:
            raw = raw[:, self.token_index]
        tokens = torch.from_numpy(np.ascontiguousarray(raw).reshape(-1, self.d))
        return tokens.view(torch.bfloat16) if self.store.dtype == "bfloat16" else tokens

    # ------------------------------------------------------------------ normalisation statistics
    def stats(self, max_tokens: int = 2**20) -> dict:
        """Per-dimension mean and mean L2 norm E‖x‖ of this hook's tokens of this kind.

        Computed in float64 over whole chunks spread evenly over the store (all of it when it holds at most
        `max_tokens` tokens), cached in the store's attributes by rank 0, and reused afterwards."""
        key = f"{self.hook}/{self.tokens}"
        cached = self.store.cached_stats(key)
        if cached is None or cached.get("max_tokens") != max_tokens:
            cached = self._compute_stats(max_tokens)
            if self.rank == 0:
                self.store.cache_stats(key, cached)
        return {"mean": torch.tensor(cached["mean"], dtype=torch.float32), "mean_norm": float(cached["mean_norm"]),
                "n_tokens": int(cached["n_tokens"])}

    def _compute_stats(self, max_tokens: int) -> dict:
        n_chunks = self.store.n_chunks
        per_chunk = self.store.chunk_images * self.tokens_per_image
        n_sample = min(n_chunks, max(1, max_tokens // per_chunk))
        chunks = np.unique(np.linspace(0, n_chunks - 1, n_sample).round().astype(int))
        total, norm_sum, count = torch.zeros(self.d, dtype=torch.float64), 0.0, 0
        for k in tqdm(chunks, desc=f"stats {self.hook}/{self.tokens}", unit="chunk", leave=False):
            x = self._read_chunk(int(k)).to(torch.float64)
            total += x.sum(0)
            norm_sum += float(x.norm(dim=1).sum())
            count += x.shape[0]
        return {"mean": (total / count).tolist(), "mean_norm": norm_sum / count, "n_tokens": count,
                "max_tokens": max_tokens}


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None:
        return distributed.rank(), distributed.world_size()
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    return rank, world_size


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the consumer has gone away; returns False if it has."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue) -> None:
    """Empty `q` (the caller is its only consumer, so `get_nowait` after `empty()` cannot fail)."""
    while not q.empty():
        q.get_nowait()
