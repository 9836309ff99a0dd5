"""Shared helpers for the eval tests: a tiny harvested store and SAEs trained on it with the real trainer."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.training.config import load_config
from visae.training.run import train

TINY_SPEC = ("timm:vit_tiny_patch16_224,pretrained=false,img_size=32,patch_size=8,depth=2,embed_dim=64,num_heads=2,"
             "num_classes=5")
TINY_HOOKS = ["blocks.0.resid_post", "blocks.1.mlp_hidden"]


def tiny_store(folder: Path, n_images: int = 48):
    """A random-init timm ViT saved to a weights file (so eval rebuilds the same model) and its store on shapes."""
    weights = folder / "tiny.safetensors"
    model = load_model(TINY_SPEC)
    save_file({k: v.contiguous() for k, v in model.module.state_dict().items()}, str(weights))
    store = harvest(HarvestConfig(out=str(folder / "store.zarr"), model=TINY_SPEC, weights=str(weights),
                                  images=f"shapes:n={n_images},seed=0,size=32", hooks=TINY_HOOKS, batch_size=16,
                                  num_workers=2, progress=False))
    return store, weights


def train_sae(store_path: str, hook: str, out_dir: Path, name: str, d_sae: int, k: int, tokens: int,
              token_kind: str = "all", seed: int = 0) -> Path:
    cfg = load_config(overrides=[
        f"store={store_path}", f"hook={hook}", f"tokens={token_kind}", f"d_sae={d_sae}", f"k={k}",
        f"total_tokens={tokens}", "batch_size=256", "device=cpu", "wandb_mode=disabled", f"out_dir={out_dir}",
        f"run_name={name}", "eval_tokens=1024", "log_every_steps=1000", "eval_every_steps=100000",
        "checkpoint_every_steps=100000", f"seed={seed}",
    ])
    return train(cfg)
