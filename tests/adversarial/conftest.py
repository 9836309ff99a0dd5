"""Fixtures of the adversarial tests; the helpers they use are in hostile.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import write_dictionary


@pytest.fixture
def dictionary_dir(tmp_path) -> Path:
    return write_dictionary(tmp_path / "dictionaries" / "tiny-topk")


@pytest.fixture
def store_path(tmp_path) -> str:
    from visae.training.synthetic import synthetic_store

    return synthetic_store(str(tmp_path / "store.zarr"), d=16, n_images=64).path
