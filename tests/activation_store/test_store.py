import json
import os

import numpy as np
import pytest
import torch
import zarr
from synthetic_store import LAYOUT, make_store
from zarr.core.metadata import ArrayV3Metadata

from visae.activation_store.store import ActivationStore


def test_layout_attrs_and_metadata_round_trip(tmp_path):
    store, x = make_store(str(tmp_path / "s.zarr"), n_images=20, chunk_images=8)
    assert store.complete and store.n_images == 20 and store.n_chunks == 3
    assert store.layout == LAYOUT and store.token_kind == "all" and store.hooks == ["blocks.0.resid_post"]
    assert store.d("blocks.0.resid_post") == 8
    acts = store.acts("blocks.0.resid_post")
    assert acts.shape == (20, 6, 8) and acts.dtype == np.float16 and acts.chunks == (8, 6, 8)
    assert acts.attrs["logical_dtype"] == "float16"
    np.testing.assert_array_equal(store.read("blocks.0.resid_post", 3, 11), x[3:11])
    assert store.image_ids.tolist() == [f"img{i}" for i in range(20)]
    assert store.labels.tolist() == [i % 3 for i in range(20)]
    assert store.factors["shape"].tolist() == [i % 2 for i in range(20)]
    assert store.patch_labels["shape"].shape == (20, 2, 2) and store.patch_labels["shape"].dtype == np.int16
    assert store.skipped == [("broken.jpg", "truncated file")]
    assert store.factor_values == {"shape": ["a", "b"]}
    assert store.done_mask().all() and len(store.fingerprint) == 16
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["format_version"] == 1


def test_bfloat16_is_stored_as_int16_and_round_trips_bit_exactly(tmp_path):
    store, x = make_store(str(tmp_path / "s.zarr"), dtype="bfloat16")
    acts = store.acts("blocks.0.resid_post")
    assert acts.dtype == np.int16 and acts.attrs["logical_dtype"] == "bfloat16"
    read = store.read("blocks.0.resid_post", 0, store.n_images)
    np.testing.assert_array_equal(read, x)
    as_torch = torch.from_numpy(store.read_raw("blocks.0.resid_post", 0, 4)).view(torch.bfloat16).float()
    np.testing.assert_array_equal(as_torch.numpy(), x[:4])


def test_zstd_compression(tmp_path):
    store, x = make_store(str(tmp_path / "s.zarr"), compression="zstd")
    metadata = store.acts("blocks.0.resid_post").metadata
    assert isinstance(metadata, ArrayV3Metadata)
    codecs = [c.to_dict()["name"] for c in metadata.codecs]
    assert "zstd" in codecs
    np.testing.assert_array_equal(store.read("blocks.0.resid_post", 0, store.n_images), x)


def test_done_mask_and_complete(tmp_path):
    store, _ = make_store(str(tmp_path / "s.zarr"), n_images=20, complete=False)
    assert not store.complete
    rw = ActivationStore.open(store.path, mode="r+")
    done = rw.group["done"]
    assert isinstance(done, zarr.Array)
    done[1] = False
    with pytest.raises(RuntimeError, match="1 chunks are not written"):
        rw.mark_complete()
    rw.write_chunk(1, {"blocks.0.resid_post": np.zeros((8, 6, 8), np.float16)})
    rw.mark_complete()
    assert ActivationStore.open(store.path).complete


def test_open_refuses_missing_foreign_and_half_created_stores(tmp_path):
    with pytest.raises(FileNotFoundError, match="no activation store"):
        ActivationStore.open(str(tmp_path / "missing.zarr"))
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(ValueError, match="not a visae activation store"):
        ActivationStore.open(str(tmp_path / "other.zarr"))
    store, _ = make_store(str(tmp_path / "s.zarr"))
    ActivationStore.open(store.path, mode="r+").group.attrs["initialized"] = False
    with pytest.raises(ValueError, match="never fully created"):
        ActivationStore.open(store.path)


def test_unknown_hook_lists_the_stored_ones(tmp_path):
    store, _ = make_store(str(tmp_path / "s.zarr"))
    with pytest.raises(ValueError, match="holds blocks.0.resid_post"):
        store.acts("blocks.1.mlp_out")


def test_chunks_are_separate_storage_objects(tmp_path):
    """Writers owning different chunks never touch the same file (docs/activation-store.md's safety rule)."""
    store, _ = make_store(str(tmp_path / "s.zarr"), n_images=20, chunk_images=8)
    chunk_dir = tmp_path / "s.zarr" / "acts" / "blocks.0.resid_post" / "c"
    assert sorted(os.listdir(chunk_dir)) == ["0", "1", "2"]
    assert sorted(os.listdir(tmp_path / "s.zarr" / "done" / "c")) == ["0", "1", "2"]


def test_open_refuses_a_newer_format_version_and_reads_stores_without_one(tmp_path):
    store, x = make_store(str(tmp_path / "s.zarr"))
    rw = ActivationStore.open(store.path, mode="r+")
    rw.group.attrs["format_version"] = 2
    with pytest.raises(ValueError, match=r"format version 2, newer than version 1.*upgrade visae"):
        ActivationStore.open(store.path)
    del rw.group.attrs["format_version"]  # written before the attribute existed: read as version 1
    old = ActivationStore.open(store.path)
    np.testing.assert_array_equal(old.read("blocks.0.resid_post", 0, old.n_images), x)
    rw.group.attrs["format_version"] = "1"
    with pytest.raises(ValueError, match="invalid format_version"):
        ActivationStore.open(store.path)


def test_open_refuses_a_store_missing_required_attributes(tmp_path):
    store, _ = make_store(str(tmp_path / "s.zarr"))
    del ActivationStore.open(store.path, mode="r+").group.attrs["layout"]
    with pytest.raises(ValueError, match="lacks the store attribute"):
        ActivationStore.open(store.path)
