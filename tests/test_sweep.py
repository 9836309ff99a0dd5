"""Sweeps: grid expansion, one pass over the data, results table + frontier plot, 2-rank sharding."""

import pytest
from PIL import Image

from sae import SAE
from training.distributed import assign_balanced
from training.sweep import expand_grid, load_sweep_config, read_results, sweep
from training.synthetic import synthetic_store

from test_distributed_train import visae_command  # noqa: E402  (tests/ is on sys.path under pytest)

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
    visae_command(["sweep", *[a for o in _overrides(store, tmp_path, "sharded") for a in ("--set", o)]], tmp_path, nproc=2)
    sharded = {r["name"]: r for r in read_results(tmp_path / "sharded")}
    reference = {r["name"]: r for r in read_results(single)}
    assert sharded.keys() == reference.keys()
    assert {r["rank"] for r in sharded.values()} == {"0", "1"}
    for name, row in sharded.items():
        assert float(row["fvu"]) == pytest.approx(float(reference[name]["fvu"]), rel=0.05, abs=0.01), name
        assert (tmp_path / "sharded" / "saes" / name / "cfg.json").exists()
