"""A small transcoder and crosscoder the service tests share, built through the real pipeline on the tiny timm ViT of
tests/service_dictionary.py: `visae harvest` of block 0's MLP input and output and two residual streams, `visae train`
(a skip transcoder mlp_in -> mlp_out, a crosscoder over the two residual streams; 4,096 tokens, 64 latents), then
`visae eval` where it succeeds for the kind (otherwise the dictionary is served without eval results, which the
service must handle as well)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml
from service_dictionary import MODEL, _run, _save_model_weights

from visae.eval.results import EvalResults

MLP_IN, MLP_OUT = "blocks.0.mlp_in", "blocks.0.mlp_out"
CROSS_HOOKS = ("blocks.0.resid_post", "blocks.1.resid_post")


@dataclass(frozen=True)
class MultiHookBuilt:
    transcoder: Path
    crosscoder: Path
    store: Path
    weights: Path


def _train(root: Path, store: Path, name: str, **settings) -> Path:
    config = {"store": str(store), "tokens": "all", "d_sae": 64, "k": 8, "total_tokens": 4096, "batch_size": 256,
              "out_dir": str(root / "runs"), "run_name": name, "eval_tokens": 512, "wandb_mode": "disabled",
              "log_every_steps": 16, "eval_every_steps": 32, "checkpoint_every_steps": 32, **settings}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    _run("train", "--config", str(path))
    return next(p.parent for p in (root / "runs" / name).rglob("cfg.json"))


def _try_eval(sae_dir: Path, store: Path, weights: Path) -> None:
    """`visae eval`, kept when it succeeds: evaluating these kinds is another piece of work, so any failure leaves the
    dictionary unevaluated rather than failing the service's tests."""
    try:
        _run("eval", str(sae_dir), "--store", str(store), "--weights", str(weights), "--top-k", "8",
             "--n-quantiles", "6", "--downstream-images", "32", "--effect-latents", "0")
    except Exception:  # noqa: BLE001  (whatever eval raises for a kind it does not handle yet)
        assert not EvalResults.exists(sae_dir)


@functools.cache
def build_multi_hook(root: Path) -> MultiHookBuilt:
    """Both dictionaries under `root`, built once per process."""
    weights, store = root / "tiny-vit.safetensors", root / "store.zarr"
    _save_model_weights(weights)
    _run("harvest", "--model", MODEL, "--weights", str(weights), "--images", "shapes:n=64,seed=0,size=64",
         "--hooks", MLP_IN, MLP_OUT, *CROSS_HOOKS, "--out", str(store), "--batch-size", "32", "--num-workers", "1")
    transcoder = _train(root, store, "transcoder", hook=MLP_IN, out_hook=MLP_OUT, architecture="topk_skip_transcoder")
    crosscoder = _train(root, store, "crosscoder", hook=CROSS_HOOKS[0], cross_hooks=list(CROSS_HOOKS[1:]),
                        architecture="crosscoder")
    for sae_dir in (transcoder, crosscoder):
        _try_eval(sae_dir, store, weights)
    return MultiHookBuilt(transcoder=transcoder, crosscoder=crosscoder, store=store, weights=weights)
