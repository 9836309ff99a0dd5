"""Issue 17: a store has one writer at a time. Two harvests of different sources into one --out, started
together, once could interleave and leave a mixed store marked complete; now the first to take the store's writer
lock writes it and the other waits, re-checks the store's identity under the lock, and is refused with both
identities named. A second harvest of the same identity waits and then finds nothing left to do, and a resumed
harvest rewrites chunks whose files were deleted."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from harvest_helpers import cli_args, run_cli, save_tiny_weights, subprocess_env

from visae.activation_store.store import ActivationStore, lock_path
from visae.activation_store.verify import check_store

HOOK = "blocks.2.resid_post"
SOURCES = ("shapes:n=16,seed=0,size=32", "shapes:n=16,seed=1,size=32")
ROUNDS = 5


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return save_tiny_weights(str(tmp_path_factory.mktemp("weights") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def reference(weights, tmp_path_factory):
    """Each source harvested alone, once, on demand."""
    made: dict[str, ActivationStore] = {}

    def of(source: str) -> ActivationStore:
        if source not in made:
            out = str(tmp_path_factory.mktemp("reference") / "store.zarr")
            result = run_cli(harvest_args(weights, out, source))
            assert result.returncode == 0, result.stderr
            made[source] = ActivationStore.open(out)
        return made[source]

    return of


def harvest_args(weights: str, out: str, source: str) -> list[str]:
    return cli_args(weights, out, source, 8, "blocks.-1.resid_post", "--no-progress")


def start(weights: str, out: str, source: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "visae", *harvest_args(weights, out, source)],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_holds_only(store: ActivationStore, alone: ActivationStore) -> None:
    check_store(store)
    assert store.complete and store.source_spec == alone.source_spec and store.fingerprint == alone.fingerprint
    np.testing.assert_array_equal(store.acts(HOOK)[:], alone.acts(HOOK)[:])
    np.testing.assert_array_equal(store.source_index, alone.source_index)


@pytest.mark.timeout(600)
def test_two_harvests_of_different_sources_into_one_store(weights, reference, tmp_path):
    for round_ in range(ROUNDS):
        out = str(tmp_path / f"round{round_}" / "store.zarr")
        os.makedirs(os.path.dirname(out))
        first, second = start(weights, out, SOURCES[0]), start(weights, out, SOURCES[1])
        results = [(source, process.wait(timeout=300), *process.communicate())
                   for source, process in ((SOURCES[0], first), (SOURCES[1], second))]
        winners = [source for source, rc, _, _ in results if rc == 0]
        losers = [(rc, err) for _, rc, _, err in results if rc != 0]
        assert len(winners) == 1 and len(losers) == 1, results
        rc, err = losers[0]
        assert rc == 2 and "visae harvest: error: refusing to resume into" in err, err
        assert "seed=0" in err and "seed=1" in err, err  # both identities named
        assert_holds_only(ActivationStore.open(out), reference(winners[0]))
        assert os.path.exists(lock_path(out))


@pytest.mark.timeout(600)
def test_two_harvests_of_one_identity_both_succeed(weights, reference, tmp_path):
    out = str(tmp_path / "store.zarr")
    processes = [start(weights, out, SOURCES[0]) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.communicate()[1]
    assert_holds_only(ActivationStore.open(out), reference(SOURCES[0]))


@pytest.mark.timeout(600)
def test_a_resumed_harvest_rewrites_a_deleted_chunk(weights, reference, tmp_path):
    out = str(tmp_path / "store.zarr")
    assert run_cli(harvest_args(weights, out, SOURCES[1])).returncode == 0
    os.remove(os.path.join(out, "acts", HOOK, "c", "1", "0", "0"))
    with pytest.raises(ValueError, match="rewrite chunk 1"):
        check_store(ActivationStore.open(out))
    result = run_cli(harvest_args(weights, out, SOURCES[1]))
    assert result.returncode == 0, result.stderr
    assert "chunk(s) 1 are marked done but their files are missing" in result.stderr
    assert_holds_only(ActivationStore.open(out), reference(SOURCES[1]))
