import collections

import numpy as np
import pytest
import torch
from synthetic_store import make_store

from visae.activation_store.loader import ActivationLoader

HOOK = "blocks.0.resid_post"


def token_ids(batches: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(image, position) of every served token, read from the first two dimensions."""
    x = torch.cat(batches)
    return list(zip(x[:, 0].long().tolist(), x[:, 1].long().tolist()))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("loader") / "s.zarr"), n_images=50, chunk_images=4)


def test_one_epoch_serves_every_token_exactly_once_in_shuffled_batches(store):
    store, x = store
    loader = ActivationLoader(store, HOOK, batch_size=16, epochs=1, buffer_tokens=60)
    batches = list(loader)
    assert all(b.dtype == torch.float32 and b.shape[1] == 8 for b in batches)
    assert [b.shape[0] for b in batches] == [16] * 18 + [12]
    served = token_ids(batches)
    assert sorted(served) == [(i, t) for i in range(50) for t in range(6)]
    assert len({image for image, _ in served[:16]}) > 4  # a batch mixes many images
    assert served != sorted(served)
    values = {tid: row for tid, row in zip(served, torch.cat(batches).numpy())}
    np.testing.assert_array_equal(values[(7, 3)], x[7, 3])


def test_epochs_reshuffle(store):
    store, _ = store
    batches = list(ActivationLoader(store, HOOK, batch_size=30, epochs=2, buffer_tokens=60))
    first, second = token_ids(batches[:10]), token_ids(batches[10:])
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_read_disjoint_shares_covering_the_epoch(store, world):
    store, _ = store
    shares = [token_ids(list(ActivationLoader(store, HOOK, batch_size=16, epochs=1, rank=r, world_size=world)))
              for r in range(world)]
    counts = collections.Counter(t for share in shares for t in share)
    assert set(counts.values()) == {1} and len(counts) == 50 * 6
    assert max(map(len, shares)) - min(map(len, shares)) <= 2 * 4 * 6  # one chunk, plus the short last chunk


@pytest.mark.parametrize("kind,positions", [("cls", {0}), ("registers", {1}), ("patches", {2, 3, 4, 5})])
def test_token_filter_is_applied_when_reading(store, kind, positions):
    store, _ = store
    loader = ActivationLoader(store, HOOK, tokens=kind, batch_size=7, epochs=1)
    served = token_ids(list(loader))
    assert {p for _, p in served} == positions and len(served) == 50 * len(positions)
    assert loader.tokens_per_epoch == 50 * len(positions)


def test_resumed_loader_sees_exactly_the_remaining_batches(store):
    store, _ = store
    make = lambda: ActivationLoader(store, HOOK, batch_size=16, epochs=3, buffer_tokens=60, seed=5)  # noqa: E731
    reference = list(make())
    loader = make()
    it = iter(loader)
    head = [next(it) for _ in range(23)]  # past the end of epoch 0 (19 batches)
    state = loader.state_dict()
    del it
    assert state["epoch"] == 1 and state["position"] == 4 * 16
    resumed = make()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(reference)
    for got, want in zip(head + tail, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_resume_refuses_a_differently_configured_loader(store):
    store, _ = store
    state = ActivationLoader(store, HOOK, batch_size=16, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1"):
        ActivationLoader(store, HOOK, batch_size=16, seed=2).load_state_dict(state)


def test_stats_are_computed_cached_in_the_store_and_reused(store, monkeypatch):
    store, x = store
    stats = ActivationLoader(store, HOOK, tokens="patches").stats()
    patches = x[:, 2:].reshape(-1, 8).astype(np.float64)
    np.testing.assert_allclose(stats["mean"].numpy(), patches.mean(0), rtol=1e-5)
    assert stats["mean_norm"] == pytest.approx(np.linalg.norm(patches, axis=1).mean(), rel=1e-9)
    assert stats["n_tokens"] == 200
    from visae.activation_store.store import ActivationStore
    reopened = ActivationStore.open(store.path)
    assert f"{HOOK}/patches" in reopened.attrs["stats"]
    monkeypatch.setattr(ActivationLoader, "_compute_stats", lambda *a: pytest.fail("stats were recomputed"))
    again = ActivationLoader(reopened, HOOK, tokens="patches").stats()
    assert torch.equal(again["mean"], stats["mean"]) and again["mean_norm"] == stats["mean_norm"]


def test_bfloat16_output_and_store(tmp_path):
    store, x = make_store(str(tmp_path / "bf.zarr"), n_images=10, dtype="bfloat16")
    batches = list(ActivationLoader(store, HOOK, batch_size=9, epochs=1, dtype=torch.bfloat16))
    assert all(b.dtype == torch.bfloat16 for b in batches)
    served = torch.cat(batches).float()
    order = np.lexsort((served[:, 1].numpy(), served[:, 0].numpy()))
    np.testing.assert_array_equal(served.numpy()[order], x.reshape(-1, 8))


def test_refuses_incomplete_store_and_missing_token_kind(tmp_path):
    store, _ = make_store(str(tmp_path / "inc.zarr"), n_images=10, complete=False)
    with pytest.raises(ValueError, match="not complete"):
        ActivationLoader(store, HOOK)
    done, _ = make_store(str(tmp_path / "ok.zarr"), n_images=10)
    with pytest.raises(ValueError, match="unknown token kind"):
        ActivationLoader(done, HOOK, tokens="everything")


def test_breaking_out_of_iteration_stops_the_background_threads(store):
    import threading
    store, _ = store
    for _ in zip(range(3), ActivationLoader(store, HOOK, batch_size=4)):
        pass
    assert not any(t.name.startswith("activation-") for t in threading.enumerate())
