"""Time and memory of saev's segmentation metrics (eval/segmentation_metrics.py) on synthetic sparse codes.

Codes are `images × patches` rows with `k` nonzeros each among `latents` columns, labels uniform over `classes`.
Prints one JSON object: seconds for the whole computation, the traced peak of Python/numpy memory (torch's working
arrays are bounded by probe1d.BLOCK_ELEMENTS by construction), the sparse codes' size, and the Newton cost per
nonzero × class, from which the 10,000 × 256 × 16k case is extrapolated (`--classes 150`, `--k 64`).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

from visae.eval.segmentation_metrics import Segmentation, segmentation_scores


def synthetic_codes(n_images: int, n_patches: int, n_latents: int, k: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_rows = n_images * n_patches
    labels = rng.integers(0, n_classes, size=(n_images, n_patches))
    cols = rng.integers(0, n_latents, size=n_rows * k)
    values = rng.gamma(2.0, 1.0, n_rows * k).astype(np.float32)
    codes = sp.csr_matrix((values, (np.repeat(np.arange(n_rows), k), cols)), shape=(n_rows, n_latents))
    return codes, labels


def main() -> None:
    parser = argparse.ArgumentParser(description="time and memory of the segmentation metrics")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--latents", type=int, default=16384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    codes, labels = synthetic_codes(args.images, args.patches, args.latents, args.k, args.classes)
    sparse_bytes = codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes
    tracemalloc.start()
    start = time.perf_counter()
    scores = segmentation_scores(codes, Segmentation(labels, [str(c) for c in range(args.classes)], "class"),
                                 args.device)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    work = codes.nnz / 2 * args.classes  # training nonzeros × classes, per Newton iteration
    print(json.dumps({
        "images": args.images, "patches": args.patches, "latents": args.latents, "k": args.k,
        "classes": args.classes, "nnz": int(codes.nnz), "seconds": round(seconds, 2),
        "sparse_codes_mib": round(sparse_bytes / 2**20, 1), "traced_peak_mib": round(peak / 2**20, 1),
        "dense_float32_mib": round(args.images * args.patches * args.latents * 4 / 2**20),
        "ns_per_nonzero_class": round(seconds / work * 1e9, 2), "probe_r": scores.summary["probe_r"],
    }))


if __name__ == "__main__":
    main()
