"""Loader throughput: shuffled 4096 x 768 float32 batches from a local store, against the same batching from an
array already in RAM (issue 2 target: >= 0.5x). Prints one JSON object.

The store is [n_images, 197, 768] float16 in 64-image chunks without compression (the harvester's defaults for
ViT-B/16), written just before, so it is read from the page cache. The in-memory baseline holds the same tokens
as one float16 array and serves batches the way the loader does: a random permutation, a gather, a cast to
float32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from visae.activation_store.layout import TokenLayout
from visae.activation_store.loader import ActivationLoader
from visae.activation_store.store import ActivationStore, ImageTable

HOOK = "blocks.11.resid_post"
LAYOUT = TokenLayout(197, 0, (), tuple(range(1, 197)), (14, 14))


def write_store(path: str, n_images: int, d: int, chunk: int) -> tuple[ActivationStore, np.ndarray]:
    attrs = {"model": {"spec": "bench", "weights_sha256": None}, "preprocess": {},
             "source": {"spec": "bench", "fingerprint": "0"}, "token_kind": "all", "layout": LAYOUT.to_dict(),
             "hooks": [HOOK], "dtype": "float16", "compression": "none", "chunk_images": chunk,
             "n_images_requested": n_images, "bad_files": "skip"}
    images = ImageTable([str(i) for i in range(n_images)], np.arange(n_images), -np.ones(n_images, dtype=int))
    store = ActivationStore.create(path, attrs, {HOOK: d}, images)
    acts = np.random.default_rng(0).standard_normal((n_images, LAYOUT.n_tokens, d), dtype=np.float32)
    acts = acts.astype(np.float16)
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        store.write_chunk(k, {HOOK: acts[start:stop]})
    store.mark_complete()
    return ActivationStore.open(path), acts.reshape(-1, d)


def from_store(store: ActivationStore, batch_size: int, epoch: int) -> float:
    loader = ActivationLoader(store, HOOK, batch_size=batch_size, seed=epoch, epochs=1)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.shape[0]
    return n / (time.perf_counter() - start)


def from_memory(tokens: torch.Tensor, batch_size: int, epoch: int) -> float:
    start, n = time.perf_counter(), 0
    order = torch.from_numpy(np.random.default_rng(epoch).permutation(tokens.shape[0]))
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[order[i:i + batch_size]].to(torch.float32)
        n += batch.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-images", type=int, default=1280)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--chunk-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, acts = write_store(f"{tmp}/bench.zarr", args.n_images, args.d, args.chunk_images)
        tokens = torch.from_numpy(acts)
        store_rates, memory_rates = [], []
        for epoch in range(args.repeats):  # interleaved, so background load hits both alike
            memory_rates.append(from_memory(tokens, args.batch_size, epoch))
            store_rates.append(from_store(store, args.batch_size, epoch))
    memory, stored = float(np.median(memory_rates)), float(np.median(store_rates))
    print(json.dumps({
        "bench": "loader", "tokens": int(tokens.shape[0]), "d": args.d, "batch_size": args.batch_size,
        "chunk_images": args.chunk_images, "torch_threads": torch.get_num_threads(),
        "memory_tokens_per_s": round(memory), "store_tokens_per_s": round(stored),
        "ratio": round(stored / memory, 3), "target_ratio": 0.5,
        "memory_runs": [round(x) for x in memory_rates], "store_runs": [round(x) for x in store_rates],
    }))


if __name__ == "__main__":
    main()
