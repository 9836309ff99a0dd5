"""A synthetic activation store with known sparse structure, for tests and benchmarks.

Each token is a sparse non-negative mix of `n_features` random unit directions plus a little noise,
the setting SAEs are built for, so a trainer that works must reach a low FVU on it quickly. Further hooks
(`more_hooks`) hold the same tokens' codes read through directions and an offset of their own: the setting of
transcoders (one hook predicted from another) and crosscoders (latents shared across hooks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visae.activation_store.layout import TokenLayout
from visae.activation_store.store import ActivationStore, ImageTable


def synthetic_store(path: str, d: int = 32, n_images: int = 256, grid: tuple[int, int] = (4, 4),
                    n_features: int = 128, active: int = 4, chunk_images: int = 16, seed: int = 0,
                    hook: str = "blocks.0.resid_post", dtype: str = "float16",
                    more_hooks: Sequence[str] = ()) -> ActivationStore:
    """Write a complete store of `n_images` images x (1 CLS + rows*cols patches) tokens at `hook` (and `more_hooks`,
    each of width d)."""
    rng = np.random.default_rng(seed)
    n_tokens = 1 + grid[0] * grid[1]
    layout = TokenLayout(n_tokens=n_tokens, cls_index=0, register_indices=(),
                         patch_indices=tuple(range(1, n_tokens)), grid=grid)
    attrs = {"model": {"spec": f"synthetic:d={d},features={n_features},seed={seed}", "n_blocks": 1}, "preprocess": {},
             "source": {"spec": f"synthetic:n={n_images},seed={seed}"}, "token_kind": "all",
             "layout": layout.to_dict(), "hooks": [hook, *more_hooks], "dtype": dtype, "compression": "none",
             "chunk_images": chunk_images, "n_images_requested": n_images, "bad_files": 0}
    images = ImageTable(ids=[str(i) for i in range(n_images)], source_index=np.arange(n_images),
                        labels=np.full(n_images, -1))
    store = ActivationStore.create(path, attrs, {h: d for h in (hook, *more_hooks)}, images)
    features = rng.standard_normal((n_features, d)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    offset = rng.standard_normal(d).astype(np.float32)
    readouts = [_readout(np.random.default_rng([seed, i + 1]), n_features, d) for i in range(len(more_hooks))]
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        n = (stop - start) * n_tokens
        codes = np.zeros((n, n_features), dtype=np.float32)
        rows = np.repeat(np.arange(n), active)
        codes[rows, rng.integers(0, n_features, n * active)] = rng.exponential(1.0, n * active) + 0.5
        x = codes @ features + offset + 0.01 * rng.standard_normal((n, d)).astype(np.float32)
        acts = {hook: x}
        for name, (directions, shift) in zip(more_hooks, readouts):
            acts[name] = codes @ directions + shift
        store.write_chunk(k, {h: a.reshape(stop - start, n_tokens, d).astype(np.float16) for h, a in acts.items()})
    store.mark_complete()
    return ActivationStore.open(path)


def _readout(rng: np.random.Generator, n_features: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Directions (norms between 0.5 and 2) and an offset through which a further hook reads the codes."""
    directions = rng.standard_normal((n_features, d)).astype(np.float32)
    directions *= rng.uniform(0.5, 2.0, (n_features, 1)).astype(np.float32) / np.linalg.norm(directions, axis=1,
                                                                                               keepdims=True)
    return directions, 3 * rng.standard_normal(d).astype(np.float32)
