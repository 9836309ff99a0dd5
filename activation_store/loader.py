"""Shuffled token batches streamed from an activation store (docs/activation-store.md, "Reading").

Tokens of one image are strongly correlated, so an epoch is built like this, for each rank:

1. the store's chunks are permuted with `(seed, epoch)`, and rank r takes every world_size-th of them;
2. consecutive groups of those chunks ("fills", about `buffer_tokens` tokens, spanning many images) are read
   whole, the token filter is applied, and each fill is shuffled in RAM with `(seed, epoch, rank, fill)`;
3. the epoch's token stream is the concatenation of the shuffled fills, cut into `batch_size` batches; the last
   batch of an epoch may be smaller, so every token is served exactly once per epoch across all ranks.

Several hooks at once (`hook` a list, `hook_stores` for hooks of other stores harvested on the same images;
`activation_store.aligned`): each chunk is read for every hook and the hooks' tokens are concatenated along the
feature axis before the shuffle, so a batch is `[batch, d_1 + d_2 + ...]` whose rows hold the same token of every
hook, and everything above (the plan, exactly once, resume, the token filter) holds for all hooks together.

Because every step is a pure function of `(seed, epoch, rank, world_size)`, the loader's state is just
`(epoch, position in the epoch's stream)`; resuming reads only the fill that holds that position.
A reader thread loads the next fill and a batcher thread cuts batches while the consumer trains.

Two ways to build the batches, serving the same tokens in the same order (bit-identical batches, and the same
`state_dict`, so a run may resume on the other path):

- host path (`device=None`, the default): each fill is gathered, shuffled, cut and cast in host memory; the
  batches are host tensors.
- device path (`device="cuda"`, `"cuda:1"`, or `"cpu"`): each fill is decoded straight from the store into a
  staging buffer in its stored dtype (float16, or bfloat16 bits held as int16) — pinned memory when the device is
  a GPU, the one host copy a token costs — and, on a GPU, copied to the device once with a non-blocking copy on a
  side stream. The permutation (the same numpy generator as the host path, its indices sent to the device), the
  gather into batches and the cast to `dtype` run on the device; the batches are device tensors. Memory: at most
  `fills_in_flight` (default 2: the fill being cut and the next one being read) fill buffers of
  `fill_capacity × d` stored-dtype values each, on the host (pinned for a GPU) and again on the GPU, plus
  `prefetch_batches` finished batches on the device. With the defaults for a ViT-B/16 store (2**17-token
  fills rounded up to whole 64-image chunks: 138,688 tokens × 768 × 2 bytes ≈ 203 MiB a fill) that is about
  406 MiB of pinned host memory, 406 MiB of GPU memory, and 8 × 12 MiB of float32 batches.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from visae.activation_store.aligned import HookColumn, align_columns
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
    """Iterates `Tensor[batch_size, d]` token batches of one hook (or several: see the module) and token kind.

    `hook` may be a list of hooks read together; `hook_stores[i]` (a store, a path, or None for `store`) is the
    store of `hook[i]`, for hooks of stores harvested from other models on the same images. `d` is then the sum of
    the hooks' widths, in the order given. `epochs=None` iterates forever; otherwise it stops after that many
    epochs (counted from epoch 0). Under torch.distributed (or with explicit `rank`/`world_size`) each rank reads
    a disjoint set of chunks (of the first hook's store, whose chunks plan the epoch).
    """

    def __init__(self, store: ActivationStore | str, hook: str | Sequence[str], tokens: str = "all",
                 batch_size: int = 4096, seed: int = 0, dtype: torch.dtype = torch.float32, epochs: int | None = None,
                 buffer_tokens: int = 2**17, prefetch_batches: int = 8, read_threads: int = 4,
                 rank: int | None = None, world_size: int | None = None, storage_options: dict | None = None,
                 device: torch.device | str | None = None, fills_in_flight: int = 2,
                 hook_stores: Sequence[ActivationStore | str | None] | None = None):
        default = _opened(store, storage_options)
        hooks = [hook] if isinstance(hook, str) else list(hook)
        stores = [default if s is None else _opened(s, storage_options) for s in (hook_stores or [None] * len(hooks))]
        if len(stores) != len(hooks):
            raise ValueError(f"hook_stores names {len(stores)} stores for {len(hooks)} hooks; give one per hook")
        self.store = stores[0]  # its chunks plan each epoch; the other stores are read at the same images
        for s in {id(s): s for s in stores}.values():
            if not s.complete:
                raise ValueError(f"the store at {s.path} is not complete; finish it by rerunning its harvest")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; choose torch.float32, torch.bfloat16 or torch.float16")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.tokens = check_token_kind(tokens)
        self.columns: list[HookColumn] = align_columns(list(zip(stores, hooks, strict=True)), tokens)
        self.hooks = hooks
        self.hook, self.batch_size, self.seed, self.dtype, self.epochs = hooks[0], batch_size, seed, dtype, epochs
        self.d = sum(c.d for c in self.columns)
        self.buffer_tokens, self.prefetch_batches, self.read_threads = buffer_tokens, prefetch_batches, read_threads
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        if self.world_size > self.store.n_chunks:
            raise ValueError(f"{self.world_size} ranks but the store has only {self.store.n_chunks} chunks; "
                             "harvest more images or use fewer ranks")
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"the loader's device must be cpu or cuda[:N], got {self.device}")
        if self.device is not None and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if fills_in_flight < 1:
            raise ValueError(f"fills_in_flight must be at least 1, got {fills_in_flight}")
        self.fills_in_flight = fills_in_flight
        self.epoch, self.position = 0, 0

    # ------------------------------------------------------------------ the epoch plan
    @property
    def tokens_per_image(self) -> int:
        return self.columns[0].tokens_per_image

    @property
    def hook_dims(self) -> list[int]:
        """The width of each hook, in the order its values sit in a batch's rows."""
        return [c.d for c in self.columns]

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

    @property
    def fill_capacity(self) -> int:
        """The most tokens one fill of this rank can hold (the size of each device-path staging buffer)."""
        per_chunk = self.store.chunk_images * self.tokens_per_image
        per_fill = max(1, -(-self.buffer_tokens // per_chunk))
        return min(per_fill, -(-self.store.n_chunks // self.world_size)) * per_chunk

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
                "buffer_tokens": self.buffer_tokens, "store_fingerprint": self.store.fingerprint,
                "hook_columns": self._column_ids()}

    def _column_ids(self) -> list[list[str]]:
        return [[c.store.fingerprint, c.hook] for c in self.columns]

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` was saved; the loader must be set up the same way (the same hooks of the same
        stores, in the same order). States saved before several hooks were supported name one hook."""
        if state.get("hook_columns", [[state["store_fingerprint"], state["hook"]]]) != self._column_ids():
            saved = [h for _, h in state.get("hook_columns", [[None, state["hook"]]])]
            raise ValueError(f"cannot resume: the saved loader state reads hooks {saved} of its stores, this loader "
                             f"reads {self.hooks} of {sorted({c.store.path for c in self.columns})}; create the "
                             "loader with the same hooks and stores")
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
        owner = threading.current_thread()
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
            # An iterator left open is finalised by the garbage collector in whichever thread runs then, possibly
            # zarr's event-loop thread, which the worker's reads wait on: joining there would deadlock. The
            # worker sees `stop` and ends by itself; only the iterating thread waits for it.
            if threading.current_thread() is owner:
                worker.join()
            _RUNNING.pop(worker, None)

    def _produce(self, epoch: int, position: int, out: queue.Queue, stop: threading.Event) -> None:
        slots = None
        try:
            if self.device is not None:
                storage = torch.int16 if self.store.dtype == "bfloat16" else torch.float16
                slots = _Slots(self.fills_in_flight, self.fill_capacity, self.d, storage, self.device)
            while (self.epochs is None or epoch < self.epochs) and not stop.is_set():
                self._produce_epoch(epoch, position, out, stop, slots)
                epoch, position = epoch + 1, 0
            _put(out, _END, stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(out, err, stop)
        finally:
            if slots is not None:
                slots.close()

    def _produce_epoch(self, epoch: int, position: int, out: queue.Queue, stop: threading.Event,
                       slots: _Slots | None = None) -> None:
        fills = [f for f in self.fills(epoch) if f.start + f.n_tokens > position]
        n_epoch = self.rank_tokens_per_epoch(epoch)
        source = self._read_ahead(fills) if slots is None else self._stage_ahead(fills, slots)
        with contextlib.closing(source):  # stops the reader thread as soon as this epoch ends or is abandoned
            self._cut_fills(epoch, position, n_epoch, source, out, stop)

    def _cut_fills(self, epoch: int, position: int, n_epoch: int, source, out: queue.Queue,
                   stop: threading.Event) -> None:
        pending: list[torch.Tensor] = []
        n_pending = 0
        for fill, data, release in source:
            order = torch.from_numpy(np.random.default_rng([self.seed, epoch, self.rank, fill.index])
                                     .permutation(fill.n_tokens))
            if data.device.type != "cpu":
                order = order.to(data.device, non_blocking=True)
            offset = max(0, position - fill.start)
            try:
                while offset < fill.n_tokens:
                    take = min(self.batch_size - n_pending, fill.n_tokens - offset)
                    pending.append(data[order[offset:offset + take]])  # a copy: the fill's buffer may be reused
                    offset, n_pending = offset + take, n_pending + take
                    end = fill.start + offset
                    if n_pending == self.batch_size or end == n_epoch:
                        batch = (pending[0] if len(pending) == 1 else torch.cat(pending)).to(self.dtype)
                        if not _put(out, (epoch, end, n_epoch, batch), stop):
                            return
                        pending, n_pending = [], 0
            finally:
                release()

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
                fill, data = item
                yield fill, data, _nothing
        finally:
            halt.set()
            reader.join()

    def _stage_ahead(self, fills: list[Fill], slots: _Slots):
        """The device path's `_read_ahead`: yield (fill, its tokens on the device, release) while a background
        thread decodes the next fills into free slots and copies them to the device. `release()` hands the
        fill's slot back once every gather from it has been issued (on a GPU the copy into the slot waits, on
        the GPU, for those gathers to finish)."""
        ready: queue.Queue = queue.Queue(maxsize=slots.n)
        halt = threading.Event()

        def stage_all():
            with ThreadPoolExecutor(self.read_threads) as pool, slots.device_context():
                for j, fill in enumerate(fills):
                    if not slots.acquire(halt):
                        return
                    slot = j % slots.n
                    try:
                        host = slots.host_for_writing(slot)
                        rows = np.cumsum([0, *(self._chunk_tokens(k) for k in fill.chunks)])
                        list(pool.map(lambda i: self._read_chunk_into(fill.chunks[i], host[rows[i]:rows[i + 1]]),
                                      range(len(fill.chunks))))
                        item = (fill, slot, slots.to_device(slot, fill.n_tokens))
                    except BaseException as err:
                        item = err
                    if not _put(ready, item, halt) or isinstance(item, BaseException):
                        return
            _put(ready, _END, halt)

        reader = threading.Thread(target=stage_all, daemon=True, name="activation-stager")
        reader.start()
        try:
            with slots.device_context():
                while (item := ready.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise item
                    fill, slot, data = item
                    slots.wait_copied(slot)
                    if self.store.dtype == "bfloat16":
                        data = data.view(torch.bfloat16)
                    yield fill, data, lambda slot=slot: slots.release(slot)
        finally:
            halt.set()
            reader.join()
            slots.synchronize()

    def _read_chunk(self, k: int, columns: Sequence[HookColumn] | None = None) -> torch.Tensor:
        """Chunk k's selected tokens of every hook (or of `columns`), flattened to [n_tokens, d] in the stored
        dtype, the hooks side by side."""
        start, stop = self.store.chunk_range(k)
        parts = [_read_column(c, start, stop) for c in (columns or self.columns)]
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        tokens = torch.from_numpy(np.ascontiguousarray(raw).reshape(-1, raw.shape[2]))
        return tokens.view(torch.bfloat16) if self.store.dtype == "bfloat16" else tokens

    def _read_chunk_into(self, k: int, out: np.ndarray) -> None:
        """Chunk k's selected tokens decoded into `out` ([n_tokens, d], the storage dtype): one copy per token
        of a single hook; several hooks are each read, then copied into their columns of `out`."""
        start, stop = self.store.chunk_range(k)
        per_image = out.reshape(stop - start, self.tokens_per_image, self.d)
        if len(self.columns) > 1:
            offsets = np.cumsum([0, *self.hook_dims])
            for c, left, right in zip(self.columns, offsets[:-1], offsets[1:]):
                per_image[:, :, left:right] = _read_column(c, start, stop)
            return
        column = self.columns[0]
        if column.token_index is None:
            column.store.read_raw_into(column.hook, start, stop, per_image)
        else:
            # mode="clip" writes straight into `out` (the default mode buffers); the indices are in range anyway
            np.take(column.store.read_raw(column.hook, start, stop), column.token_index, axis=1, out=per_image,
                    mode="clip")

    # ------------------------------------------------------------------ normalisation statistics
    def stats(self, max_tokens: int = 2**20) -> dict:
        """Per-dimension mean and mean L2 norm E‖x‖ of this hook's tokens of this kind (a loader of several hooks:
        `hook_stats`).

        Computed in float64 over whole chunks spread evenly over the store (all of it when it holds at most
        `max_tokens` tokens), cached in the store's attributes by rank 0, and reused afterwards."""
        if len(self.columns) > 1:
            raise ValueError(f"this loader reads {len(self.columns)} hooks; use hook_stats() for each one's statistics")
        return self.hook_stats(max_tokens)[0]

    def hook_stats(self, max_tokens: int = 2**20) -> list[dict]:
        """`stats` of each hook, in order (each cached in its own store)."""
        return [self._column_stats(c, max_tokens) for c in self.columns]

    def _column_stats(self, column: HookColumn, max_tokens: int) -> dict:
        key = f"{column.hook}/{self.tokens}"
        cached = column.store.cached_stats(key)
        if cached is None or cached.get("max_tokens") != max_tokens:
            cached = self._compute_stats(column, max_tokens)
            if self.rank == 0:
                column.store.cache_stats(key, cached)
        return {"mean": torch.tensor(cached["mean"], dtype=torch.float32), "mean_norm": float(cached["mean_norm"]),
                "n_tokens": int(cached["n_tokens"])}

    def _compute_stats(self, column: HookColumn, max_tokens: int) -> dict:
        n_chunks = self.store.n_chunks
        per_chunk = self.store.chunk_images * self.tokens_per_image
        n_sample = min(n_chunks, max(1, max_tokens // per_chunk))
        chunks = np.unique(np.linspace(0, n_chunks - 1, n_sample).round().astype(int))
        total, norm_sum, count = torch.zeros(column.d, dtype=torch.float64), 0.0, 0
        for k in tqdm(chunks, desc=f"stats {column.hook}/{self.tokens}", unit="chunk", leave=False):
            x = self._read_chunk(int(k), [column]).to(torch.float64)
            total += x.sum(0)
            norm_sum += float(x.norm(dim=1).sum())
            count += x.shape[0]
        return {"mean": (total / count).tolist(), "mean_norm": norm_sum / count, "n_tokens": count,
                "max_tokens": max_tokens}


class _Slots:
    """The device path's `n` fill buffers (docs/activation-store.md, "Reading").

    Slot i holds a host staging buffer (pinned when the device is a GPU) and, on a GPU, a device buffer of
    `capacity × d` stored-dtype values; fill j uses slot j % n. A semaphore of n permits bounds the fills in
    flight: the stager takes one before it writes a slot and the batcher gives it back when done with the fill.
    On a GPU two events per slot order the reuse: `copied` (the host-to-device copy, on a side stream, is done:
    the staging buffer may be overwritten, the device buffer read) and `consumed` (the batcher's gathers from the
    device buffer, on its stream, are done: the next copy into it may start)."""

    def __init__(self, n: int, capacity: int, d: int, dtype: torch.dtype, device: torch.device):
        self.n, self.device = n, device
        self.cuda = device.type == "cuda"
        self.free = threading.Semaphore(n)
        self.host = [torch.empty((capacity, d), dtype=dtype, pin_memory=self.cuda) for _ in range(n)]
        self.on_device = ([torch.empty((capacity, d), dtype=dtype, device=device) for _ in range(n)]
                          if self.cuda else self.host)
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.copied = [torch.cuda.Event() for _ in range(n)] if self.cuda else []
        self.consumed = [torch.cuda.Event() for _ in range(n)] if self.cuda else []

    def device_context(self):
        return torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()

    def acquire(self, halt: threading.Event) -> bool:
        """Take a free slot, unless the consumer has gone away (then False)."""
        while not halt.is_set():
            if self.free.acquire(timeout=0.1):
                return True
        return False

    def host_for_writing(self, slot: int) -> np.ndarray:
        """Slot's staging buffer as a numpy array, once its previous host-to-device copy has finished."""
        if self.cuda:
            self.copied[slot].synchronize()
        return self.host[slot].numpy()

    def to_device(self, slot: int, n_tokens: int) -> torch.Tensor:
        """Start the copy of the slot's first n_tokens rows to the device; the device rows (not yet valid on
        the batcher's stream until `wait_copied`)."""
        if not self.cuda:
            return self.host[slot][:n_tokens]
        assert self.stream is not None
        target = self.on_device[slot][:n_tokens]
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(self.consumed[slot])
            target.copy_(self.host[slot][:n_tokens], non_blocking=True)
            self.copied[slot].record(self.stream)
        return target

    def wait_copied(self, slot: int) -> None:
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(self.copied[slot])

    def release(self, slot: int) -> None:
        if self.cuda:
            self.consumed[slot].record(torch.cuda.current_stream(self.device))
        self.free.release()

    def synchronize(self) -> None:
        """Wait for copies still in flight (before the buffers are freed)."""
        if self.stream is not None:
            self.stream.synchronize()

    def close(self) -> None:
        self.synchronize()
        self.host, self.on_device = [], []


def _nothing() -> None:
    pass


def _opened(store: ActivationStore | str, storage_options: dict | None) -> ActivationStore:
    return store if isinstance(store, ActivationStore) else ActivationStore.open(store, storage_options)


def _read_column(column: HookColumn, start: int, stop: int) -> np.ndarray:
    """Images [start, stop) of one hook's selected tokens, [n, tokens, d] in the stored dtype."""
    raw = column.store.read_raw(column.hook, start, stop)
    return raw if column.token_index is None else raw[:, column.token_index]


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
