"""Small activation stores with known contents, written through the real ActivationStore API (no model needed).

Each token's vector starts with (image index, token position), so a test can tell exactly which tokens a
loader served; the remaining dimensions are random.
"""

from __future__ import annotations

import numpy as np

from visae.activation_store.layout import TokenLayout
from visae.activation_store.store import ActivationStore, ImageTable

LAYOUT = TokenLayout(n_tokens=6, cls_index=0, register_indices=(1,), patch_indices=(2, 3, 4, 5), grid=(2, 2))


def synthetic_acts(n_images: int, d: int, seed: int = 0, n_tokens: int = LAYOUT.n_tokens) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_images, n_tokens, d)).astype(np.float32)
    x[:, :, 0] = np.arange(n_images)[:, None]
    x[:, :, 1] = np.arange(n_tokens)[None, :]
    return x


def make_store(path: str, n_images: int = 50, d: int = 8, chunk_images: int = 8, dtype: str = "float16",
               compression: str = "none", complete: bool = True, storage_options: dict | None = None,
               hooks: tuple[str, ...] = ("blocks.0.resid_post",), layout: TokenLayout = LAYOUT,
               image_ids: list[str] | None = None) -> tuple[ActivationStore, np.ndarray]:
    """A store of `n_images` synthetic images; returns it and the float32 activations written (the same for
    every hook)."""
    attrs = {"model": {"spec": "synthetic", "weights_sha256": None}, "preprocess": {},
             "source": {"spec": "synthetic", "fingerprint": "0", "label_names": None,
                        "factor_names": ["shape"], "factor_values": {"shape": ["a", "b"]}},
             "token_kind": "all", "layout": layout.to_dict(), "hooks": list(hooks), "dtype": dtype,
             "compression": compression, "chunk_images": chunk_images, "n_images_requested": n_images,
             "bad_files": "skip"}
    images = ImageTable(ids=image_ids or [f"img{i}" for i in range(n_images)], source_index=np.arange(n_images),
                        labels=np.arange(n_images) % 3, factors={"shape": np.arange(n_images) % 2},
                        patch_labels={"shape": np.zeros((n_images, *layout.grid), dtype=np.int16)},
                        skipped=[("broken.jpg", "truncated file")])
    store = ActivationStore.create(path, attrs, {h: d for h in hooks}, images, storage_options)
    x = synthetic_acts(n_images, d, n_tokens=layout.n_tokens)
    stored = _storage(x, dtype)
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        store.write_chunk(k, {h: stored[start:stop] for h in hooks})
    if complete:
        store.mark_complete()
    return ActivationStore.open(path, storage_options), _logical(stored, dtype)


def _storage(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return x.astype(np.float16)
    bits = x.view(np.uint32)
    return ((bits + 0x8000) >> 16).astype(np.uint16).view(np.int16)  # round to the nearest bfloat16


def _logical(stored: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return stored.astype(np.float32)
    return (stored.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
