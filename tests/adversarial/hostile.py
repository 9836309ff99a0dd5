"""What the adversarial tests (issue 17, "nothing silently wrong") share: hostile images built byte by byte, a
small served dictionary with hand-written eval results, a short training config on a synthetic store, a run
stopped after its first checkpoint, and a store damaged in place. (A module of its own: every test folder has a
`conftest`, so `from conftest import ...` would be ambiguous.)"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from visae.sae import SAEConfig, create_sae
from visae.training.config import TrainConfig, load_config

HOOK = "blocks.0.resid_post"
SERVER_STORE = "/srv/private/datasets/secret-store.zarr"  # an absolute server path the API must not show


def png_of_zeros(width: int, height: int) -> bytes:
    """A real, fully decodable 8-bit greyscale PNG of `width` x `height` black pixels, with a hand-built IDAT: the
    rows compress about a thousandfold, so a 24,000,000 x 1 image is some 23 kB and a 200,000 x 1 one a few hundred
    bytes, far inside any byte or pixel limit."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0, then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# The probes of item 1: (name, width, height). Both pass the default upload limits (8 MiB, 24 Mpixel) and PIL's
# decompression-bomb limit; unbounded, a model resizing the shorter side to 64 px would ask for 12.8e6 x 64 and
# 1.5e9 x 64 pixels.
LONG_IMAGES = [("wide-200000x1.png", 200_000, 1), ("wide-24000000x1.png", 24_000_000, 1)]


def write_dictionary(folder: Path, d_in: int = 8, d_sae: int = 16, n_images: int = 3) -> Path:
    """A TopK SAE folder with hand-written eval results: `n_images` 16x16 thumbnails, every feature's top examples
    on them, and a summary naming an absolute store path on the server."""
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=4,
                               metadata={"model_name": "timm:vit_tiny_patch16_224,pretrained=false",
                                         "hook_name": "blocks.1.resid_post", "token_kind": "all"}))
    sae.save(folder)
    evaluation = folder / "eval"
    (evaluation / "thumbs").mkdir(parents=True)
    for i in range(n_images):
        Image.new("RGB", (16, 16), (40 * i, 100, 200)).save(evaluation / "thumbs" / f"{i}.png")
    k, grid = n_images, (2, 2)
    images = np.tile(np.arange(n_images, dtype=np.int64), (d_sae, 1))
    acts = np.linspace(1, 0.5, k, dtype=np.float32)[None].repeat(d_sae, 0)
    heat = np.ones((d_sae, k, *grid), np.float16)
    save_file({"top_images": images, "top_acts": acts, "top_heatmaps": heat, "quantile_images": images,
               "quantile_acts": acts, "quantile_heatmaps": heat}, str(evaluation / "top.safetensors"))
    pd.DataFrame({"feature": np.arange(d_sae), "freq": np.full(d_sae, 0.1), "rank": np.arange(d_sae)}).to_parquet(
        evaluation / "features.parquet", index=False)
    summary = {"model": "timm:vit_tiny_patch16_224,pretrained=false", "hook": "blocks.1.resid_post",
               "token_kind": "all", "store": SERVER_STORE, "fvu": 0.1, "l0": 4.0, "dead_fraction": 0.0}
    (evaluation / "summary.json").write_text(json.dumps(summary))
    return folder


def train_config(store_path: str, out_dir: Path, **overrides) -> TrainConfig:
    """A short TopK run on the synthetic store: 256-token steps, a log window every 5 steps."""
    settings = {"store": store_path, "hook": HOOK, "expansion_factor": 4, "batch_size": 256, "k": 4,
                "log_every_steps": 5, "eval_every_steps": 1000, "checkpoint_every_steps": 10, "eval_tokens": 1024,
                "total_tokens": 256 * 200, "out_dir": str(out_dir), "run_name": "run", "wandb_mode": "disabled",
                "device": "cpu", **overrides}
    return load_config(None, [f"{key}={value}" for key, value in settings.items()])


class Interrupted(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def interrupted_run(store: str, out_dir: Path, monkeypatch, **overrides) -> Path:
    """A run stopped just after its first checkpoint (step 10): its folder, with `checkpoint.pt` and its config."""
    from visae.training import run

    real_save = run.save_checkpoint

    def save_then_stop(run_dir, state):
        real_save(run_dir, state)
        raise Interrupted

    monkeypatch.setattr(run, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run.train(train_config(store, out_dir, **overrides))
    monkeypatch.setattr(run, "save_checkpoint", real_save)
    run_dir = out_dir / "run"
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "sae").exists()
    return run_dir


def fill_store_with(store: str, value: float, chunks: list[int] | None = None) -> None:
    """Overwrite the activations of some chunks (all by default) with `value`, as a damaged store would hold."""
    from visae.activation_store.store import ActivationStore

    opened = ActivationStore.open(store, mode="r+")
    acts = opened.acts(HOOK)
    for k in range(opened.n_chunks) if chunks is None else chunks:
        start, stop = opened.chunk_range(k)
        acts[start:stop] = np.full((stop - start, *acts.shape[1:]), value, dtype=acts.dtype)
