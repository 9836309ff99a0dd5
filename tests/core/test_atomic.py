"""Atomic writes: a failed writer leaves the old content and no temporary; a finished one replaces it."""

import os

import pytest
import torch

from visae.core.atomic import atomic_folder, atomic_path, write_atomic


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.pt"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["state.pt"]


def test_success_replaces_the_file_through_a_recognisable_sibling(tmp_path):
    target = tmp_path / "state.pt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp == tmp_path / f".state.pt.tmp-{os.getpid()}"
        torch.save({"step": 3}, tmp)
        assert target.read_text() == "old"  # nothing changes until the writer is done
    assert torch.load(target) == {"step": 3}
    assert names(tmp_path) == ["state.pt"]
    write_atomic(target, "text")
    assert target.read_text() == "text"


def test_a_leftover_of_a_killed_process_is_replaced(tmp_path):
    target = tmp_path / "log.jsonl"
    leftover = tmp_path / f".log.jsonl.tmp-{os.getpid()}"
    leftover.mkdir()  # even a folder under the temporary name does not block the write
    (leftover / "junk").write_text("x")
    write_atomic(target, "line\n")
    assert target.read_text() == "line\n"
    assert names(tmp_path) == ["log.jsonl"]


def test_folder_variant_swaps_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "sae"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
    assert names(target) == ["a", "b"]
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("killed")
    assert names(target) == ["a", "b"] and names(tmp_path) == ["sae"]
    with atomic_folder(target) as tmp:
        (tmp / "c").write_text("3")
    assert names(target) == ["c"]  # replaced, not merged
    assert names(tmp_path) == ["sae"]  # the old folder, set aside during the swap, is gone
