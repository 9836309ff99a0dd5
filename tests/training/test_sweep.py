"""Sweeps: grid expansion, one pass over the data, results table + frontier plot, 2-rank sharding."""

import signal
import subprocess
import time

import pytest
import torch
from cli_process import flags, visae_command
from PIL import Image
from safetensors.torch import load_file

from visae.core.distributed import assign_balanced
from visae.sae import SAE
from visae.training.sweep import expand_grid, load_sweep_config, sweep
from visae.training.sweep_results import read_results
from visae.training.synthetic import synthetic_store

HOOK = "blocks.0.resid_post"
GRID = ["grid.architecture=[topk,standard]", "grid.k=[2,4]", "grid.expansion_factor=[2,3]"]


def _overrides(store, tmp_path, name):
    return [f"store={store}", f"hook={HOOK}", "total_tokens=12800", "batch_size=256", "log_every_steps=10",
            "eval_tokens=2048", "wandb_mode=disabled", f"out_dir={tmp_path}", f"run_name={name}", *GRID]


def test_grid_skips_parameters_that_do_not_apply():
    cfg = load_sweep_config(None, ["store=s", f"hook={HOOK}", *GRID, "grid.lr=[null,1e-3]"])
    names = [m.run_name for m in expand_grid(cfg)]
    # topk: 2 k x 2 widths x 2 LRs; standard ignores k: 2 widths x 2 LRs
    assert len(names) == len(set(names)) == 12
    assert "standard-cdefault-x3-lr0.001" in names and "topk-k4-x2" in names


def test_assignment_balances_unequal_widths_without_divisibility():
    owners = assign_balanced([4096, 1024, 1024, 1024, 1024, 512, 300], n_ranks=2)
    load = [sum(c for c, o in zip([4096, 1024, 1024, 1024, 1024, 512, 300], owners) if o == r) for r in (0, 1)]
    assert set(owners) == {0, 1} and abs(load[0] - load[1]) <= 4096


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "store.zarr"
    synthetic_store(str(path), d=32, n_images=64)
    return path


@pytest.fixture(scope="module")
def single(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return sweep(load_sweep_config(None, _overrides(store, out, "single")))


def test_one_pass_writes_table_plot_and_dictionaries(single):
    rows = read_results(single)
    assert len(rows) == 6
    for row in rows:
        sae = SAE.load(single / "saes" / row["name"])
        assert sae.cfg.metadata["fvu"] == pytest.approx(float(row["fvu"]))
        assert 0 < float(row["fvu"]) < 1.5 and float(row["n_eval_tokens"]) >= 2048
    topk = {r["name"]: float(r["l0"]) for r in rows if r["architecture"] == "topk"}
    assert topk["topk-k2-x2"] == pytest.approx(2) and topk["topk-k4-x3"] == pytest.approx(4)
    assert float(next(r for r in rows if r["name"] == "topk-k4-x3")["fvu"]) < 0.6
    with Image.open(single / "frontier.png") as img:
        assert img.size[0] > 300


@pytest.mark.slow
def test_two_rank_sharded_sweep_trains_each_sae_once_like_one_process(single, store, tmp_path):
    visae_command(["sweep", *flags(_overrides(store, tmp_path, "sharded"))], tmp_path, nproc=2)
    sharded = {r["name"]: r for r in read_results(tmp_path / "sharded")}
    reference = {r["name"]: r for r in read_results(single)}
    assert sharded.keys() == reference.keys()
    assert {r["rank"] for r in sharded.values()} == {"0", "1"}
    for name, row in sharded.items():
        assert float(row["fvu"]) == pytest.approx(float(reference[name]["fvu"]), rel=0.05, abs=0.01), name
        assert (tmp_path / "sharded" / "saes" / name / "cfg.json").exists()


@pytest.mark.slow
def test_kill9_then_resume_sweep_gives_identical_weights(store, tmp_path):
    """A sweep killed just after a checkpoint and resumed ends bit-identical to an uninterrupted one."""
    long = ["total_tokens=76800", "checkpoint_every_steps=7"]
    sets = lambda name: flags([*_overrides(store, tmp_path, name), *long])  # noqa: E731
    visae_command(["sweep", *sets("straight")], tmp_path)

    killed = tmp_path / "killed"
    proc = visae_command(["sweep", *sets("killed")], tmp_path, wait=False)
    deadline = time.time() + 240
    while not (killed / "checkpoint" / "latest.json").exists():
        assert proc.poll() is None, "the sweep ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.csv").exists(), "the sweep finished before it was killed"
    with pytest.raises(AssertionError, match="unfinished sweep"):
        visae_command(["sweep", *sets("killed")], tmp_path)

    visae_command(["sweep", "--resume", str(killed)], tmp_path)
    assert not (killed / "checkpoint").exists()
    for row in read_results(tmp_path / "straight"):
        want = load_file(tmp_path / "straight" / "saes" / row["name"] / "sae_weights.safetensors")
        got = load_file(killed / "saes" / row["name"] / "sae_weights.safetensors")
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), row["name"]


@pytest.mark.slow
def test_two_rank_sweep_with_batchtopk_on_one_rank_only_finishes(store, tmp_path):
    """Only BatchTopK calibrates after training; the rank without one must still join the batches' gather."""
    overrides = [*_overrides(store, tmp_path, "mixed")[:-len(GRID)], "grid.architecture=[batchtopk,topk]",
                 "grid.k=[4]", "grid.expansion_factor=[2]", "total_tokens=5120"]
    proc = visae_command(["sweep", *flags(overrides)], tmp_path, nproc=2, wait=False)
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the sharded sweep hung after training")
    assert proc.returncode == 0, err[-4000:]
    rows = {r["name"]: r for r in read_results(tmp_path / "mixed")}
    assert {r["rank"] for r in rows.values()} == {"0", "1"}
    assert float(rows["batchtopk-k4-x2"]["l0"]) == pytest.approx(4, rel=0.1)
