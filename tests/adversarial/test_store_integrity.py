"""Issue 17: a damaged store is refused when training or evaluation opens it (the cheap checks of
`activation_store.verify`), and `visae verify` finds what the cheap checks cannot (unreadable or non-finite
chunks). Each probe once read silently: a deleted chunk as zeros, a truncated one as garbage or an error deep in a
codec, a wrong attribute as misshapen tokens."""

from __future__ import annotations

import os

import numpy as np
import pytest
from synthetic_store import make_store

from visae.activation_store.store import ActivationStore
from visae.service.cli import main
from visae.training.data import open_store

HOOK = "blocks.0.resid_post"


@pytest.fixture
def store_path(tmp_path) -> str:
    path = str(tmp_path / "store.zarr")
    make_store(path, n_images=50, d=8, chunk_images=8)
    return path


def chunk_file(path: str, k: int, hook: str = HOOK) -> str:
    return os.path.join(path, "acts", hook, "c", str(k), "0", "0")


def set_attr(path: str, key: str, value) -> None:
    ActivationStore.open(path, mode="r+").group.attrs[key] = value


def refused(path: str, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        open_store(path, HOOK)
    message = str(info.value)
    assert path in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_clean_store_opens(store_path):
    store, hook = open_store(store_path, HOOK)
    assert hook == HOOK and store.complete


def test_a_deleted_chunk_file_is_refused(store_path):
    os.remove(chunk_file(store_path, 3))
    refused(store_path, "chunk 3 (images 24-31)", "missing", "rerun the same `visae harvest` to rewrite chunk 3")


def test_a_truncated_chunk_file_is_refused(store_path):
    with open(chunk_file(store_path, 2), "r+b") as f:
        f.truncate(100)
    refused(store_path, "chunk 2 (images 16-23)", "100 bytes", "truncated")


def test_complete_on_a_partial_store_is_refused(tmp_path):
    path = str(tmp_path / "partial.zarr")
    make_store(path, complete=False)
    ActivationStore.open(path, mode="r+").group["done"][4] = False  # type: ignore[index]
    os.remove(chunk_file(path, 4))
    set_attr(path, "complete", True)
    refused(path, "marked complete", "1 of 7 chunks unwritten", "chunk 4", "images 32-39", "visae harvest")


def test_a_dtype_attribute_that_disagrees_with_the_data_is_refused(store_path):
    set_attr(store_path, "dtype", "bfloat16")
    refused(store_path, "dtype attribute says bfloat16", "float16")


def test_an_array_width_that_disagrees_with_the_metadata_is_refused(store_path):
    set_attr(store_path, "hook_dims", {HOOK: 16})
    refused(store_path, "d=8", "hook_dims says 16")


def test_a_layout_with_the_wrong_token_count_is_refused(store_path):
    layout = ActivationStore.open(store_path).attrs["layout"]
    set_attr(store_path, "layout", {**layout, "n_tokens": 7})
    refused(store_path, "shape (50, 6, 8)", "a layout of 7 tokens")


def test_a_layout_with_patch_indices_outside_the_tokens_is_refused(store_path):
    layout = ActivationStore.open(store_path).attrs["layout"]
    set_attr(store_path, "layout", {**layout, "patch_indices": [2, 3, 4, 9]})
    refused(store_path, "outside the 6 tokens", "[9]")


def test_n_images_that_disagrees_with_the_arrays_is_refused(store_path):
    set_attr(store_path, "n_images", 40)
    refused(store_path, "n_images=40")


# ------------------------------------------------------------------------------------------------ visae verify
def test_verify_passes_a_clean_store(store_path, capsys):
    assert main(["verify", store_path, "--no-progress"]) == 0
    assert "ok" in capsys.readouterr().out


def test_verify_reports_an_inf_chunk_and_a_deleted_chunk(store_path, capsys):
    store = ActivationStore.open(store_path, mode="r+")
    values = store.read_raw(HOOK, 8, 16).copy()
    values[3, 2, 1] = np.inf
    store.write_chunk(1, {HOOK: values})
    os.remove(chunk_file(store_path, 5))
    assert main(["verify", store_path, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "chunk 5 (images 40-47)" in err and "missing" in err
    assert "chunk 1 (images 8-15)" in err and "1 infinite" in err and "image 11" in err
    assert f"hook {HOOK}" in err and "2 problems found" in err


def test_verify_reports_an_unreadable_compressed_chunk(tmp_path, capsys):
    path = str(tmp_path / "zstd.zarr")
    make_store(path, compression="zstd")
    with open(chunk_file(path, 0), "r+b") as f:
        f.truncate(10)
    assert main(["verify", path, "--no-progress"]) == 1
    assert "chunk 0 (images 0-7): the chunk cannot be read" in capsys.readouterr().err


def test_verify_of_no_store_is_a_usage_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing.zarr")]) == 2
    assert "visae verify: error:" in capsys.readouterr().err
