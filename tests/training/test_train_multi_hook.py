"""Training transcoders and crosscoders with the SAE trainer (training/hook_set.py): the toy model's block-2 MLP
(mlp_in -> mlp_out), crosscoders over hooks of one store and over two stores, sweeps, and the settings refused."""

import json
from typing import Any

import pytest
import torch

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.loader import ActivationLoader
from visae.core.reconstruction import ReconstructionStats
from visae.sae import SAE
from visae.sae.crosscoder import PROFILE_FILE
from visae.training.config import TrainConfig
from visae.training.hook_set import open_hook_set
from visae.training.run import train
from visae.training.sweep import SweepConfig, SweepGrid, sweep
from visae.training.synthetic import synthetic_store

pytestmark = pytest.mark.timeout(180)

MLP_IN, MLP_OUT = "blocks.2.mlp_in", "blocks.2.mlp_out"
HOOKS = ("blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.resid_post")
QUICK: dict[str, Any] = dict(k=8, expansion_factor=4, total_tokens=256 * 60, batch_size=256, log_every_steps=20,
                             eval_every_steps=30, checkpoint_every_steps=1000, eval_tokens=4096, wandb_mode="disabled")


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    """The shipped toy model harvested at block 2's MLP input and output, on 64 images (4,416 tokens)."""
    cfg = HarvestConfig(out=str(tmp_path_factory.mktemp("toy") / "store.zarr"), images="shapes:n=64,seed=0,size=64",
                        hooks=[MLP_IN, MLP_OUT], batch_size=32, num_workers=1, device="cpu", progress=False)
    return harvest(cfg).path


@pytest.fixture(scope="module")
def three_hooks(tmp_path_factory):
    return synthetic_store(str(tmp_path_factory.mktemp("syn") / "s.zarr"), d=16, n_images=64, hook=HOOKS[0],
                           more_hooks=HOOKS[1:]).path


def test_skip_transcoder_learns_the_toy_models_mlp(toy_store, tmp_path, one_thread):
    out = train(TrainConfig(store=toy_store, hook="blocks.-4.mlp_in", out_hook="blocks.-4.mlp_out",
                            architecture="topk_skip_transcoder", out_dir=str(tmp_path), **QUICK))
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert (meta["hook_name"], meta["hook_name_out"]) == (MLP_IN, MLP_OUT)  # spelled canonically
    assert meta["fvu"] < 0.35 and meta["l0"] <= 8
    transcoder = SAE.load(out)
    loader = ActivationLoader(toy_store, [MLP_IN, MLP_OUT], batch_size=1024, epochs=1)
    stats = ReconstructionStats(96)
    with torch.no_grad():
        for x in loader:
            stats.update(x[:, 96:], transcoder(x[:, :96]))  # the loaded folder predicts mlp_out from mlp_in
    assert stats.result()["fvu"] == pytest.approx(meta["fvu"], abs=0.05)


def test_crosscoder_trains_over_three_hooks_and_records_where_its_latents_live(three_hooks, tmp_path, one_thread):
    out = train(TrainConfig(store=three_hooks, hook=HOOKS[0], cross_hooks=list(HOOKS[1:]), architecture="crosscoder",
                            out_dir=str(tmp_path), **QUICK))
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["hook_names"] == list(HOOKS)
    per_hook = meta["eval_summary"]["per_hook"]
    assert list(per_hook) == list(HOOKS) and all(0 < v["fvu"] < 0.5 for v in per_hook.values())
    profile = meta["hook_profile"]
    assert profile["hooks"] == list(HOOKS) and 0 <= profile["shared_fraction"] <= 1
    assert (out / PROFILE_FILE).is_file()
    assert SAE.load(out).cfg.hook_dims == [16, 16, 16]


def test_crosscoder_over_two_models_reads_their_stores_aligned(tmp_path, one_thread):
    a = synthetic_store(str(tmp_path / "a.zarr"), d=16, n_images=64, seed=0).path
    b = synthetic_store(str(tmp_path / "b.zarr"), d=8, n_images=64, seed=1, chunk_images=8).path
    hook = HOOKS[0]
    cfg = TrainConfig(store=a, hook=hook, cross_hooks=[hook], cross_stores=[b], architecture="crosscoder",
                      out_dir=str(tmp_path), **QUICK)
    with pytest.raises(ValueError, match=rf"different widths \({hook}: 16, {hook}: 8\).*hook_widths 16 8"):
        train(cfg)
    out = train(TrainConfig(**{**cfg.__dict__, "hook_widths": [16, 8]}))
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["model_names"] == ["synthetic:d=16,features=128,seed=0", "synthetic:d=8,features=128,seed=1"]
    assert meta["stores"] == [a, b] and "+" in meta["store_fingerprint"]


def test_a_sweep_trains_a_grid_of_transcoders_in_one_pass(three_hooks, tmp_path, one_thread):
    cfg = SweepConfig(store=three_hooks, hook=HOOKS[0], out_hook=HOOKS[1], out_dir=str(tmp_path),
                      grid=SweepGrid(architecture=["topk_transcoder", "batchtopk_skip_transcoder"], k=[4, 8]),
                      **{**QUICK, "total_tokens": 256 * 20})
    folder = sweep(cfg)
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 5
    saved = {json.loads(p.read_text())["architecture"] for p in (folder / "saes").glob("*/cfg.json")}
    assert saved == {"topk_transcoder", "jumprelu_skip_transcoder"}
    mixed = SweepConfig(store=three_hooks, hook=HOOKS[0], out_hook=HOOKS[1], out_dir=str(tmp_path),
                        grid=SweepGrid(architecture=["topk_transcoder", "topk"]), **QUICK)
    with pytest.raises(ValueError, match=r"must all read the same hooks, got topk_transcoder \(transcoder\), topk"):
        sweep(mixed)


@pytest.mark.parametrize("settings,message", [
    (dict(architecture="topk_transcoder", out_hook="blocks.2.mlp_hidden"),
     "has no hook 'blocks.2.mlp_hidden'; it holds blocks.2.mlp_in, blocks.2.mlp_out"),
    (dict(architecture="topk_transcoder", hook="blocks.2.resid_post", out_hook=MLP_OUT),
     "has no hook 'blocks.2.resid_post'; it holds blocks.2.mlp_in, blocks.2.mlp_out"),
    (dict(architecture="topk_skip_transcoder"), "predicts `out_hook` from `hook`; set out_hook"),
    (dict(architecture="topk", out_hook=MLP_OUT), "out_hook is for transcoders and topk is a sae"),
    (dict(architecture="crosscoder"), "reads `hook` and `cross_hooks` together; set cross_hooks"),
    (dict(architecture="crosscoder", cross_hooks=[MLP_OUT], cross_stores=["a", "b"]),
     "cross_stores names 2 stores for 1 cross_hooks"),
    (dict(architecture="crosscoder", cross_hooks=[MLP_OUT], hook_widths=[96, 384]),
     r"hook_widths \[96, 384\] disagree with the stores \(blocks.2.mlp_in: 96, blocks.2.mlp_out: 96\)"),
])
def test_hook_settings_the_stores_or_architecture_cannot_serve_are_refused(toy_store, settings, message):
    cfg = TrainConfig(**{"store": toy_store, "hook": MLP_IN, **settings})
    with pytest.raises(ValueError, match=message):
        open_hook_set(cfg)
