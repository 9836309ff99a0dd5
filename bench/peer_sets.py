"""The activation sets `bench/peers.py` compares the libraries on, built once into a cache folder.

Each set is a visae activation store (so every library reads the same `ActivationLoader` stream) plus, where the
generating dictionary is known, its ground-truth feature directions (`truth.npy` beside the store, one unit row
per feature) for the MMCS score. They differ in d_in, norm, anisotropy and sparsity structure:

| set | d_in | what |
|---|---|---|
| `toy-resid` | 96 | the shipped toy ViT at `blocks.-2.resid_post` (the quickstart's store: 2,048 `shapes` images) |
| `toy-mlp` | 384 | the same store at `blocks.2.mlp_hidden`: non-negative-heavy GELU neurons |
| `synthetic` | 256 | SAELens's own generator (`sae_lens.synthetic.SyntheticModel`): 4,096 features, Zipfian firing |
| `vit-b` | 768 | a random-init timm ViT-B/16 (96 px) at `blocks.5.resid_post` on 3,000 `shapes` images |
| `anisotropic` | 512 | sparse features plus four dominant directions with most of the variance and a large offset |
|  |  | (the few dominant directions of real ViT residual streams) |

The stores are regenerated deterministically from their seeds (`build(name)`; the cache folder is
`$VISAE_SETS`, default /tmp/visae-sets); none is kept in the repository.

    python bench/peer_sets.py [NAME ...]      # build (or find) the sets and print their paths
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visae.activation_store.layout import TokenLayout
from visae.activation_store.store import ActivationStore, ImageTable

SYNTHETIC_HOOK = "blocks.0.resid_post"
TOKENS_PER_IMAGE = 16  # synthetic sets: 1 CLS + a 3 x 5 "patch" grid per image, so every loader option works


@dataclass(frozen=True)
class ActivationSet:
    """A built set: the store, the hook, and the ground-truth directions' file when known."""

    name: str
    store: str
    hook: str
    truth: str | None = None

    def truth_directions(self) -> np.ndarray | None:
        return None if self.truth is None else np.load(self.truth)


def cache_dir() -> Path:
    return Path(os.environ.get("VISAE_SETS", "/tmp/visae-sets"))


def build(name: str) -> ActivationSet:
    """The set `name`, built into the cache folder on first use."""
    if name not in BUILDERS:
        raise ValueError(f"unknown set {name!r}; choose from {', '.join(BUILDERS)}")
    return BUILDERS[name](cache_dir())


def toy_store(cache: Path) -> str:
    """The quickstart's store (2,048 `shapes` images, the toy ViT at its three hooks)."""
    path = cache / "toy" / "store.zarr"
    if not _complete(path):
        from visae.service.commands.quickstart import _harvest

        _harvest(cache / "toy", 2048)
    return str(path)


def toy_resid(cache: Path) -> ActivationSet:
    return ActivationSet("toy-resid", toy_store(cache), "blocks.-2.resid_post")


def toy_mlp(cache: Path) -> ActivationSet:
    return ActivationSet("toy-mlp", toy_store(cache), "blocks.2.mlp_hidden")


def vit_b(cache: Path) -> ActivationSet:
    """A random-init ViT-B/16 at 96 px (36 patches + CLS), middle block."""
    path = cache / "vitb.zarr"
    hook = "blocks.5.resid_post"
    if not _complete(path):
        from visae.activation_store.harvest_config import HarvestConfig
        from visae.activation_store.harvester import harvest

        harvest(HarvestConfig(out=str(path), model="timm:vit_base_patch16_224,pretrained=false,img_size=96",
                              images="shapes:n=3000,seed=3,size=96", hooks=[hook], tokens="all", batch_size=32))
    return ActivationSet("vit-b", str(path), hook)


def synthetic(cache: Path) -> ActivationSet:
    """SAELens's synthetic-superposition generator: 4,096 unit features in d = 256 with Zipfian firing
    probabilities (0.3 down to 0.005) and a bias of norm 1; 2^20 tokens."""
    import torch
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig, ZipfianFiringProbabilityConfig

    path = cache / "synthetic.zarr"
    if not _complete(path):
        torch.manual_seed(0)
        model = SyntheticModel(SyntheticModelConfig(
            num_features=4096, hidden_dim=256, seed=0,
            firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.3, min_prob=0.005)))
        with torch.no_grad():
            x = torch.cat([model.sample(8192) for _ in range(128)]).numpy()
        _write_store(path, x, model.feature_dict.feature_vectors.detach().float().numpy(), "sae_lens.synthetic:d=256")
    return ActivationSet("synthetic", str(path), SYNTHETIC_HOOK, str(path / "truth.npy"))


def anisotropic(cache: Path, d: int = 512, n_features: int = 4096, seed: int = 0) -> ActivationSet:
    """Sparse features (each token: ~16 of 4,096 unit directions, exponential magnitudes) plus four fixed
    directions with large Gaussian coefficients (together about 80% of the variance) and an offset of norm
    about 3x the sparse part's: the few dominant directions of real ViT residual streams. 2^19 tokens."""
    path = cache / "anisotropic.zarr"
    if not _complete(path):
        rng = np.random.default_rng(seed)
        features = _unit_rows(rng.standard_normal((n_features, d))).astype(np.float32)
        scales = np.array([[12.0], [8.0], [6.0], [4.0]])
        dominant = (_unit_rows(rng.standard_normal((4, d))) * scales).astype(np.float32)
        offset = (_unit_rows(rng.standard_normal((1, d)))[0] * 12.0).astype(np.float32)
        probs = 16 / n_features * np.geomspace(4, 0.25, n_features)  # a spread of firing rates, mean ~16 per token
        parts = []
        for _ in range(32):
            codes = (rng.random((16384, n_features), dtype=np.float32) < probs).astype(np.float32)
            codes *= rng.exponential(1.0, codes.shape).astype(np.float32)
            parts.append(codes @ features + rng.standard_normal((16384, 4), dtype=np.float32) @ dominant + offset)
        _write_store(path, np.concatenate(parts).astype(np.float32), features, "anisotropic:d=512,dominant=4")
    return ActivationSet("anisotropic", str(path), SYNTHETIC_HOOK, str(path / "truth.npy"))


BUILDERS = {"toy-resid": toy_resid, "toy-mlp": toy_mlp, "synthetic": synthetic, "vit-b": vit_b,
            "anisotropic": anisotropic}


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _complete(path: Path) -> bool:
    meta = path / "zarr.json"
    return meta.exists() and bool(json.loads(meta.read_text()).get("attributes", {}).get("complete"))


def _write_store(path: Path, x: np.ndarray, truth: np.ndarray, spec: str) -> None:
    """Write tokens x [N, d] as a store of N / 16 "images" at SYNTHETIC_HOOK, and the truth beside it."""
    n_images, d = x.shape[0] // TOKENS_PER_IMAGE, x.shape[1]
    layout = TokenLayout(n_tokens=TOKENS_PER_IMAGE, cls_index=0, register_indices=(),
                         patch_indices=tuple(range(1, TOKENS_PER_IMAGE)), grid=(3, 5))
    attrs = {"model": {"spec": spec, "n_blocks": 1}, "preprocess": {}, "source": {"spec": f"{spec}:n={n_images}"},
             "token_kind": "all", "layout": layout.to_dict(), "hooks": [SYNTHETIC_HOOK], "dtype": "float16",
             "compression": "none", "chunk_images": 1024, "n_images_requested": n_images, "bad_files": 0}
    images = ImageTable(ids=[str(i) for i in range(n_images)], source_index=np.arange(n_images),
                        labels=np.full(n_images, -1))
    store = ActivationStore.create(str(path), attrs, {SYNTHETIC_HOOK: d}, images)
    acts = x[:n_images * TOKENS_PER_IMAGE].reshape(n_images, TOKENS_PER_IMAGE, d).astype(np.float16)
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        store.write_chunk(k, {SYNTHETIC_HOOK: acts[start:stop]})
    np.save(path / "truth.npy", _unit_rows(truth.astype(np.float32)))
    store.mark_complete()


if __name__ == "__main__":
    for set_name in sys.argv[1:] or list(BUILDERS):
        print(build(set_name))
