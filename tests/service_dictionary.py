"""The small evaluated dictionaries the service tests (and `bench/serve.py`) share, built through the real pipeline:
`visae harvest` (shapes images through a tiny timm ViT whose seeded random weights are saved to a safetensors file,
so harvest, eval and the service all run the same model), `visae train` (TopK SAEs, a few steps), `visae eval`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from visae.activation_store.models import load_model
from visae.service.cli import main

MODEL = "timm:vit_tiny_patch16_224,pretrained=false,img_size=64,depth=2"
IMAGES = "shapes:n=64,seed=0,size=64"
HOOK = "blocks.1.resid_post"
MLP_HOOK = "blocks.0.mlp_hidden"


@dataclass(frozen=True)
class Built:
    resid: Path  # SAE folder at HOOK, evaluated
    mlp: Path  # SAE folder at MLP_HOOK, evaluated
    store: Path
    weights: Path


def _run(*argv: str) -> None:
    code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"`visae {' '.join(argv)}` exited with {code}")


def _save_model_weights(path: Path) -> None:
    torch.manual_seed(0)
    module = load_model(MODEL).module
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def _train(root: Path, store: Path, hook: str, name: str) -> Path:
    config = {"store": str(store), "hook": hook, "tokens": "all", "architecture": "topk", "d_sae": 128, "k": 8,
              "total_tokens": 8192, "batch_size": 256, "out_dir": str(root / "runs"), "run_name": name,
              "eval_tokens": 512, "wandb_mode": "disabled", "log_every_steps": 16, "eval_every_steps": 32,
              "checkpoint_every_steps": 32}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    _run("train", "--config", str(path))
    return next(p.parent for p in (root / "runs" / name).rglob("cfg.json"))


@functools.cache
def build_dictionaries(root: Path) -> Built:
    """Both dictionaries under `root`, built once per process."""
    weights, store = root / "tiny-vit.safetensors", root / "store.zarr"
    _save_model_weights(weights)
    _run("harvest", "--model", MODEL, "--weights", str(weights), "--images", IMAGES, "--hooks", HOOK, MLP_HOOK,
         "--out", str(store), "--batch-size", "32", "--num-workers", "1")
    resid, mlp = _train(root, store, HOOK, "resid"), _train(root, store, MLP_HOOK, "mlp")
    for sae_dir in (resid, mlp):
        _run("eval", str(sae_dir), "--store", str(store), "--weights", str(weights), "--top-k", "8",
             "--n-quantiles", "6", "--downstream-images", "32")
    return Built(resid=resid, mlp=mlp, store=store, weights=weights)
