"""Loader throughput: shuffled 4096 x 768 float32 batches from a local store, against the same batching from an
array already in RAM (issue 2 target: >= 0.5x). Prints one JSON object.

The store is [n_images, 197, 768] float16 in 64-image chunks without compression (the harvester's defaults for
ViT-B/16), written just before, so it is read from the page cache. Measured, interleaved round by round:

- `store`: today's loader (the host path: fills gathered, shuffled, cut and cast in host memory);
- `device_cpu`: the loader's device path with device=cpu (fills decoded straight into staging buffers, then the
  permutation, gather and cast, as a GPU would run them, here on the CPU);
- `device_cuda`: the same on the GPU (batches left on the GPU), when one is visible;
- `staging`: the host's whole share of the device path on a GPU: every fill decoded into a reused staging
  buffer (as the stager does, one copy per token, one thread here), no permutation, gather or cast;
- `memory`: the same tokens as one float16 array in RAM, batched the way the loader does (a random permutation,
  a gather, a cast to float32);
- `memcpy`: one plain copy of the store's float16 bytes into a preallocated array (the physical limit of any
  path that must touch every byte once), as tokens/s.
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


def create_store(path: str, n_images: int, d: int, chunk: int) -> ActivationStore:
    """An empty float16 [n_images, 197, d] store of HOOK (ViT-B/16 layout, no compression), for readers' speed."""
    attrs = {"model": {"spec": "bench", "weights_sha256": None}, "preprocess": {},
             "source": {"spec": "bench", "fingerprint": "0"}, "token_kind": "all", "layout": LAYOUT.to_dict(),
             "hooks": [HOOK], "dtype": "float16", "compression": "none", "chunk_images": chunk,
             "n_images_requested": n_images, "bad_files": "skip"}
    images = ImageTable([str(i) for i in range(n_images)], np.arange(n_images), -np.ones(n_images, dtype=int))
    return ActivationStore.create(path, attrs, {HOOK: d}, images)


def write_store(path: str, n_images: int, d: int, chunk: int) -> tuple[ActivationStore, np.ndarray]:
    store = create_store(path, n_images, d, chunk)
    acts = np.random.default_rng(0).standard_normal((n_images, LAYOUT.n_tokens, d), dtype=np.float32)
    acts = acts.astype(np.float16)
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        store.write_chunk(k, {HOOK: acts[start:stop]})
    store.mark_complete()
    return ActivationStore.open(path), acts.reshape(-1, d)


def from_store(store: ActivationStore, batch_size: int, epoch: int, device: str | None = None) -> float:
    loader = ActivationLoader(store, HOOK, batch_size=batch_size, seed=epoch, epochs=1, device=device)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.shape[0]
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def staging(store: ActivationStore, batch_size: int, epoch: int) -> float:
    loader = ActivationLoader(store, HOOK, batch_size=batch_size, seed=epoch, device="cpu")
    buffer = np.empty((loader.fill_capacity, loader.d), dtype=np.float16)
    start, n = time.perf_counter(), 0
    for fill in loader.fills(epoch):
        rows = np.cumsum([0, *(loader._chunk_tokens(k) for k in fill.chunks)])
        for i, k in enumerate(fill.chunks):
            loader._read_chunk_into(k, buffer[rows[i]:rows[i + 1]])
        n += fill.n_tokens
    return n / (time.perf_counter() - start)


def memcpy(acts: np.ndarray, out: np.ndarray) -> float:
    start = time.perf_counter()
    np.copyto(out, acts)
    return acts.shape[0] / (time.perf_counter() - start)


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
    runs: dict[str, list[float]] = {"memory": [], "store": [], "device_cpu": [], "staging": [], "memcpy": []}
    if torch.cuda.is_available():
        runs["device_cuda"] = []
    with tempfile.TemporaryDirectory() as tmp:
        store, acts = write_store(f"{tmp}/bench.zarr", args.n_images, args.d, args.chunk_images)
        tokens = torch.from_numpy(acts)
        copy = np.empty_like(acts)
        np.copyto(copy, acts)  # fault the destination's pages in once, as a reused buffer would be
        for epoch in range(args.repeats):  # interleaved, so background load hits them alike
            runs["memory"].append(from_memory(tokens, args.batch_size, epoch))
            runs["store"].append(from_store(store, args.batch_size, epoch))
            runs["device_cpu"].append(from_store(store, args.batch_size, epoch, device="cpu"))
            if "device_cuda" in runs:
                runs["device_cuda"].append(from_store(store, args.batch_size, epoch, device="cuda"))
            runs["staging"].append(staging(store, args.batch_size, epoch))
            runs["memcpy"].append(memcpy(acts, copy))
    med = {name: float(np.median(values)) for name, values in runs.items()}
    print(json.dumps({
        "bench": "loader", "tokens": int(tokens.shape[0]), "d": args.d, "batch_size": args.batch_size,
        "chunk_images": args.chunk_images, "torch_threads": torch.get_num_threads(),
        **{f"{name}_tokens_per_s": round(rate) for name, rate in med.items()},
        "ratio": round(med["store"] / med["memory"], 3), "target_ratio": 0.5,
        "device_cpu_vs_store": round(med["device_cpu"] / med["store"], 3),
        "store_vs_memcpy": round(med["store"] / med["memcpy"], 3),
        "device_cpu_vs_memcpy": round(med["device_cpu"] / med["memcpy"], 3),
        "staging_vs_memcpy": round(med["staging"] / med["memcpy"], 3),
        **({"device_cuda_vs_memcpy": round(med["device_cuda"] / med["memcpy"], 3)} if "device_cuda" in med else {}),
        **{f"{name}_runs": [round(x) for x in values] for name, values in runs.items()},
    }))


if __name__ == "__main__":
    main()
