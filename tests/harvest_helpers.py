"""A tiny random-init ViT saved to a weights file, so every process harvests with the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import zarr
from safetensors.torch import save_file

from visae.activation_store.models import load_model
from visae.activation_store.store import ActivationStore

TINY_SPEC = "timm:vit_tiny_patch16_224,pretrained=false,img_size=32,depth=3,embed_dim=64,num_heads=2"


def save_tiny_weights(path: str) -> str:
    model = load_model(TINY_SPEC)
    save_file({k: v.contiguous() for k, v in model.module.state_dict().items()}, path)
    return path


def cli_args(weights: str, out: str, images: str = "shapes:n=48,seed=0,size=32", batch_size: int = 8,
             hooks: str = "blocks.-1.resid_post,blocks.1.mlp_hidden", *extra: str) -> list[str]:
    return ["harvest", "--model", TINY_SPEC, "--weights", weights, "--images", images, "--hooks", *hooks.split(","),
            "--out", out, "--batch-size", str(batch_size), "--num-workers", "2", "--device", "cpu", *extra]


def subprocess_env() -> dict:
    """One compute thread everywhere, as torchrun gives its workers, so all runs do bit-identical arithmetic."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TQDM_DISABLE": "1"}


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visae", *args], env=subprocess_env(), capture_output=True,
                          text=True, **kwargs)


def assert_same_stores(a: ActivationStore, b: ActivationStore) -> None:
    """Identical array by array, and the same metadata."""
    assert a.complete and b.complete and a.hooks == b.hooks and a.fingerprint == b.fingerprint
    for hook in a.hooks:
        np.testing.assert_array_equal(a.acts(hook)[:], b.acts(hook)[:])
    for name in ("image_ids", "labels", "source_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in a.factors:
        np.testing.assert_array_equal(a.factors[name], b.factors[name])
    np.testing.assert_array_equal(a.done_mask(), b.done_mask())


def chunks_done(path: str) -> int:
    """How many chunks a (maybe half-created) local store marks done; 0 before it exists."""
    try:
        group = zarr.open_group(path, mode="r")
        if not group.attrs.get("initialized"):
            return 0
        done = group["done"]
        assert isinstance(done, zarr.Array)
        return int(np.asarray(done[:]).sum())
    except (FileNotFoundError, KeyError, ValueError):  # not created yet, or metadata being written
        return 0


def start_and_kill(args: list[str], when) -> None:
    """Start a harvest and SIGKILL it as soon as `when()` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "visae", *args], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not when() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the harvest ended before it could be killed"
