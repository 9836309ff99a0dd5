"""The loader's device path (`device=...`): staged fills, permutation, batching and cast on the device.

On this CPU-only test machine the path runs with device="cpu" (same code, no pinning, no streams); the CUDA test
runs where a GPU is visible."""

import collections
import threading

import numpy as np
import pytest
import torch
from synthetic_store import make_store

from visae.activation_store import loader as loader_module
from visae.activation_store.loader import ActivationLoader

HOOK = "blocks.0.resid_post"
ALL_TOKENS = [(i, t) for i in range(50) for t in range(6)]


def token_ids(batches: list[torch.Tensor]) -> list[tuple[int, int]]:
    x = torch.cat([b.cpu().float() for b in batches])
    return list(zip(x[:, 0].long().tolist(), x[:, 1].long().tolist()))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("device-loader") / "s.zarr"), n_images=50, chunk_images=4)


def make(store, device="cpu", **kw) -> ActivationLoader:
    kw = {"batch_size": 16, "buffer_tokens": 60, "seed": 5, **kw}
    return ActivationLoader(store, HOOK, device=device, **kw)


def test_every_token_once_per_epoch_in_float32_batches_on_the_device(store):
    store, x = store
    batches = list(make(store, epochs=2))
    assert all(b.dtype == torch.float32 and b.device.type == "cpu" and b.shape[1] == 8 for b in batches)
    assert [b.shape[0] for b in batches] == ([16] * 18 + [12]) * 2
    first, second = token_ids(batches[:19]), token_ids(batches[19:])
    assert sorted(first) == ALL_TOKENS and sorted(second) == ALL_TOKENS and first != second
    values = {tid: row for tid, row in zip(first, torch.cat(batches[:19]).numpy())}
    np.testing.assert_array_equal(values[(7, 3)], x[7, 3])


@pytest.mark.parametrize("fills_in_flight", [1, 2, 3])
def test_same_batches_as_the_host_path(store, fills_in_flight):
    store, _ = store
    host = list(ActivationLoader(store, HOOK, batch_size=16, buffer_tokens=60, seed=5, epochs=2))
    device = list(make(store, epochs=2, fills_in_flight=fills_in_flight))
    assert len(device) == len(host)
    for epoch in (slice(0, 19), slice(19, 38)):  # equal as sets per epoch, and in fact batch for batch
        assert sorted(token_ids(device[epoch])) == sorted(token_ids(host[epoch]))
    for got, want in zip(device, host):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("saved_by_host", [False, True])
def test_resumes_bit_exactly_from_a_state_dict(store, saved_by_host):
    store, _ = store
    reference = list(make(store, epochs=3))
    loader = (ActivationLoader(store, HOOK, batch_size=16, buffer_tokens=60, seed=5, epochs=3) if saved_by_host
              else make(store, epochs=3))
    it = iter(loader)
    head = [next(it) for _ in range(23)]  # past the end of epoch 0 (19 batches)
    state = loader.state_dict()
    del it
    assert state["epoch"] == 1 and state["position"] == 4 * 16
    resumed = make(store, epochs=3)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(reference)
    for got, want in zip(head + tail, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kind,positions", [("cls", {0}), ("registers", {1}), ("patches", {2, 3, 4, 5})])
def test_token_filters(store, kind, positions):
    store, x = store
    batches = list(make(store, tokens=kind, batch_size=7, epochs=1))
    served = token_ids(batches)
    assert {p for _, p in served} == positions and sorted(served) == sorted(t for t in ALL_TOKENS if t[1] in positions)
    host = list(ActivationLoader(store, HOOK, tokens=kind, batch_size=7, buffer_tokens=60, seed=5, epochs=1))
    assert all(torch.equal(a, b) for a, b in zip(batches, host)) and len(batches) == len(host)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_read_disjoint_shares_covering_the_epoch(store, world):
    store, _ = store
    shares = [token_ids(list(make(store, epochs=1, rank=r, world_size=world))) for r in range(world)]
    counts = collections.Counter(t for share in shares for t in share)
    assert set(counts.values()) == {1} and sorted(counts) == ALL_TOKENS


def test_bfloat16_store_is_cast_on_the_device(tmp_path):
    store, x = make_store(str(tmp_path / "bf.zarr"), n_images=10, dtype="bfloat16")
    for dtype in (torch.bfloat16, torch.float32):
        batches = list(ActivationLoader(store, HOOK, batch_size=9, epochs=1, dtype=dtype, device="cpu"))
        assert all(b.dtype == dtype for b in batches)
        served = torch.cat(batches).float()
        order = np.lexsort((served[:, 1].numpy(), served[:, 0].numpy()))
        np.testing.assert_array_equal(served.numpy()[order], x.reshape(-1, 8))


def test_at_most_fills_in_flight_buffers_are_held(store, monkeypatch):
    store, _ = store
    held, peak, lock = [0], [0], threading.Lock()
    created: list = []
    acquire, release, init = loader_module._Slots.acquire, loader_module._Slots.release, loader_module._Slots.__init__

    def counting_init(self, n, capacity, d, dtype, device):
        init(self, n, capacity, d, dtype, device)
        created.append((n, capacity, [tuple(b.shape) for b in self.host]))

    def counting_acquire(self, halt):
        ok = acquire(self, halt)
        with lock:
            held[0] += ok
            peak[0] = max(peak[0], held[0])
        return ok

    def counting_release(self, slot):
        with lock:
            held[0] -= 1
        release(self, slot)

    monkeypatch.setattr(loader_module._Slots, "__init__", counting_init)
    monkeypatch.setattr(loader_module._Slots, "acquire", counting_acquire)
    monkeypatch.setattr(loader_module._Slots, "release", counting_release)
    loader = make(store, epochs=2, fills_in_flight=2, prefetch_batches=1)
    assert loader.fill_capacity == 3 * 4 * 6  # 60 tokens round up to 3 chunks of 4 images x 6 tokens
    assert len(list(loader)) == 38
    assert created == [(2, 72, [(72, 8), (72, 8)])]
    assert 1 <= peak[0] <= 2 and held[0] == 0


def test_refuses_bad_settings(store):
    store, _ = store
    with pytest.raises(ValueError, match="fills_in_flight"):
        make(store, fills_in_flight=0)
    with pytest.raises(ValueError, match="cpu or cuda"):
        make(store, device="meta")


def test_breaking_out_stops_the_background_threads(store):
    store, _ = store
    for _ in zip(range(3), make(store, batch_size=4)):
        pass
    assert not any(t.name.startswith("activation-") for t in threading.enumerate())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_path_serves_the_host_path_batches_on_the_gpu_and_resumes(tmp_path, dtype):
    store, _ = make_store(str(tmp_path / "s.zarr"), n_images=50, chunk_images=4, dtype=dtype)
    host = list(ActivationLoader(store, HOOK, batch_size=16, buffer_tokens=60, seed=5, epochs=2))
    loader = make(store, device="cuda", epochs=2)
    gpu = list(loader)
    assert all(b.device.type == "cuda" and b.dtype == torch.float32 for b in gpu)
    assert len(gpu) == len(host) and all(torch.equal(a.cpu(), b) for a, b in zip(gpu, host))
    partial = make(store, device="cuda", epochs=2)
    it = iter(partial)
    head = [next(it) for _ in range(23)]
    state = partial.state_dict()
    del it
    resumed = make(store, device="cuda", epochs=2)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(head + tail, host)) and len(head) + len(tail) == len(host)
