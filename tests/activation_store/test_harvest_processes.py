"""The harvest as users run it, in separate processes: kill -9 and rerun, and torchrun with 2 gloo ranks."""

import os
import subprocess
import sys

import numpy as np
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

from visae.activation_store.store import ActivationStore
from visae.service.cli import main

pytestmark = pytest.mark.slow
IMAGES = "shapes:n=600,seed=0,size=32"
BATCH = 4  # 150 chunks, so the harvest is still running when the test kills it


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    weights = save_tiny_weights(str(root / "tiny.safetensors"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses (subprocess_env), for bit-identical arithmetic
    try:
        assert main(cli_args(weights, str(root / "reference.zarr"), IMAGES, BATCH) + ["--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, weights, ActivationStore.open(str(root / "reference.zarr"))


def test_kill_9_while_creating_and_while_harvesting_then_rerun_gives_an_identical_store(setup):
    root, weights, reference = setup
    out = str(root / "killed.zarr")
    args = cli_args(weights, out, IMAGES, BATCH)
    start_and_kill(args, lambda: os.path.exists(os.path.join(out, "zarr.json")))  # during store creation
    start_and_kill(args, lambda: chunks_done(out) >= 2)
    killed = ActivationStore.open(out)
    assert not killed.complete and 2 <= killed.done_mask().sum() < killed.n_chunks

    rerun = run_cli(args, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_stores(ActivationStore.open(out), reference)


def test_torchrun_two_ranks_equal_one_process(setup):
    root, weights, reference = setup
    out = str(root / "torchrun.zarr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "visae", *cli_args(weights, out, IMAGES, BATCH)]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    store = ActivationStore.open(out)
    assert_same_stores(store, reference)
    assert np.asarray(store.done_mask()).all()
