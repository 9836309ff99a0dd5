"""The hf: and wds: sources harvested as users run it, in separate processes: kill -9 and rerun, and torchrun with
2 gloo ranks, each against one uninterrupted harvest of the same data."""

import subprocess
import sys

import pytest
import torch
from harvest_helpers import (
    assert_same_stores,
    chunks_done,
    cli_args,
    run_cli,
    save_tiny_weights,
    start_and_kill,
    subprocess_env,
)
from image_datasets import shapes_images, write_parquet, write_shards

from visae.activation_store.store import ActivationStore
from visae.service.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
N_IMAGES, BATCH = 240, 4  # 60 chunks, so the harvest is still running when the test kills it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Weights, and the same images as WebDataset shards and as a Parquet dataset (offline `datasets` cache)."""
    root = tmp_path_factory.mktemp("datasets")
    images = shapes_images(N_IMAGES)
    write_shards(root / "shards", images, per_shard=64)
    specs = {"wds": f"wds:{root}/shards/shard-{{000..003}}.tar,label=cls",
             "hf": f"hf:{write_parquet(root / 'parquet', images, per_file=100)}"}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_DATASETS_CACHE", str(root / "hf-cache"))
        env.setenv("HF_DATASETS_OFFLINE", "1")
        yield root, save_tiny_weights(str(root / "tiny.safetensors")), specs


def reference(data, kind: str) -> ActivationStore:
    root, weights, specs = data
    out = root / f"{kind}-reference.zarr"
    if not out.exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the subprocesses (subprocess_env), for bit-identical arithmetic
        try:
            assert main(cli_args(weights, str(out), specs[kind], BATCH, "blocks.-1.resid_post", "--no-progress")) == 0
        finally:
            torch.set_num_threads(threads)
    return ActivationStore.open(str(out))


@pytest.mark.parametrize("kind", ["wds", "hf"])
def test_kill_9_then_rerun_gives_an_identical_store(data, kind):
    root, weights, specs = data
    out = str(root / f"{kind}-killed.zarr")
    args = cli_args(weights, out, specs[kind], BATCH, "blocks.-1.resid_post")
    start_and_kill(args, lambda: chunks_done(out) >= 2)
    killed = ActivationStore.open(out)
    assert not killed.complete and 2 <= killed.done_mask().sum() < killed.n_chunks
    rerun = run_cli(args, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_stores(ActivationStore.open(out), reference(data, kind))


@pytest.mark.parametrize("kind", ["wds", "hf"])
def test_torchrun_two_ranks_equal_one_process(data, kind):
    root, weights, specs = data
    out = str(root / f"{kind}-torchrun.zarr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "visae", *cli_args(weights, out, specs[kind], BATCH, "blocks.-1.resid_post")]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    store = ActivationStore.open(out)
    assert_same_stores(store, reference(data, kind))
    assert store.label_names == reference(data, kind).label_names and (store.labels >= 0).all()
