"""Several hooks read together: hooks of one store, and one hook each of two stores harvested from different
models on the same images (activation_store/aligned.py). Every synthetic token starts with (image, position)."""

import collections

import numpy as np
import pytest
import torch
from synthetic_store import make_store

from visae.activation_store.layout import TokenLayout
from visae.activation_store.loader import ActivationLoader

A, B = "blocks.0.resid_post", "blocks.1.mlp_out"
# Another "model": no register token, so its patches sit one position earlier than in LAYOUT.
NO_REGISTERS = TokenLayout(n_tokens=5, cls_index=0, register_indices=(), patch_indices=(1, 2, 3, 4), grid=(2, 2))


def ids(batches: list[torch.Tensor], offset: int = 0) -> list[tuple[int, int]]:
    """(image, position) of every served token, read from the hook whose values start at column `offset`."""
    x = torch.cat(batches)
    return list(zip(x[:, offset].long().tolist(), x[:, offset + 1].long().tolist()))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    two_hooks, x = make_store(str(root / "two.zarr"), n_images=30, d=8, chunk_images=4, hooks=(A, B))
    other, y = make_store(str(root / "other.zarr"), n_images=30, d=5, chunk_images=8, layout=NO_REGISTERS)
    return two_hooks, x, other, y


def test_two_hooks_of_one_store_serve_the_same_token_side_by_side_exactly_once(stores):
    store, x, _, _ = stores
    loader = ActivationLoader(store, [A, B], batch_size=16, epochs=1, buffer_tokens=60)
    batches = list(loader)
    assert loader.hook_dims == [8, 8] and all(b.shape[1] == 16 for b in batches)
    served = torch.cat(batches)
    torch.testing.assert_close(served[:, :8], served[:, 8:], rtol=0, atol=0)  # both hooks hold the same values
    assert sorted(ids(batches)) == [(i, t) for i in range(30) for t in range(6)]
    assert ids(batches) != sorted(ids(batches))
    np.testing.assert_array_equal(served[ids(batches).index((7, 3))].numpy(), np.concatenate([x[7, 3], x[7, 3]]))


@pytest.mark.parametrize("device", [None, "cpu"])
def test_two_models_pair_the_same_patch_of_the_same_image(stores, device):
    """Patches of stores with different token layouts (and widths and chunking) pair by grid position."""
    store, _, other, y = stores
    loader = ActivationLoader(store, [A, A], tokens="patches", batch_size=16, epochs=1, hook_stores=[None, other],
                              device=device)
    batches = list(loader)
    assert loader.hook_dims == [8, 5]
    first, second = ids(batches), ids(batches, offset=8)
    assert [(i, p - 2) for i, p in first] == [(i, p - 1) for i, p in second]  # patch j: position j+2, then j+1
    assert sorted(first) == [(i, p) for i in range(30) for p in (2, 3, 4, 5)]
    image, position = first[5]
    np.testing.assert_array_equal(torch.cat(batches)[5, 8:].numpy(), y[image, position - 1])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_the_epoch_for_every_hook_together(stores, world):
    store, _, other, _ = stores
    shares = [list(ActivationLoader(store, [A, A], tokens="cls", batch_size=4, epochs=1, rank=r, world_size=world,
                                    hook_stores=[None, other])) for r in range(world)]
    counts = collections.Counter(t for share in shares for t in ids(share))
    assert set(counts.values()) == {1} and sorted(counts) == [(i, 0) for i in range(30)]
    for share in shares:
        assert ids(share) == ids(share, offset=8)


def test_resume_continues_every_hook_and_refuses_other_hooks(stores):
    store, _, other, _ = stores
    make = lambda hooks=(A, B): ActivationLoader(store, list(hooks), batch_size=16, epochs=2,  # noqa: E731
                                                 buffer_tokens=60, seed=3)
    reference = list(make())
    loader = make()
    it = iter(loader)
    head = [next(it) for _ in range(15)]  # into epoch 1 (12 batches an epoch)
    state = loader.state_dict()
    del it
    resumed = make()
    resumed.load_state_dict(state)
    for got, want in zip(head + list(resumed), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for changed in (make((A,)), make((B, A)), ActivationLoader(store, [A, A], tokens="patches", batch_size=16,
                                                                 seed=3, buffer_tokens=60, hook_stores=[None, other])):
        with pytest.raises(ValueError, match=r"cannot resume: the saved loader state reads hooks \['blocks.0"):
            changed.load_state_dict(state)


def test_single_hook_states_saved_before_multi_hook_loading_still_resume(stores):
    store, _, _, _ = stores
    state = ActivationLoader(store, A, batch_size=16).state_dict()
    del state["hook_columns"]
    ActivationLoader(store, A, batch_size=16).load_state_dict(state)
    with pytest.raises(ValueError, match="cannot resume"):
        ActivationLoader(store, [A, B], batch_size=16).load_state_dict(state)


def test_hook_stats_are_per_hook(stores):
    store, x, other, y = stores
    stats = ActivationLoader(store, [A, A], tokens="patches", hook_stores=[None, other]).hook_stats()
    assert [s["mean"].shape[0] for s in stats] == [8, 5]
    patches = y[:, 1:].reshape(-1, 5).astype(np.float64)
    assert stats[1]["mean_norm"] == pytest.approx(np.linalg.norm(patches, axis=1).mean(), rel=1e-6)
    with pytest.raises(ValueError, match="use hook_stats"):
        ActivationLoader(store, [A, B]).stats()


@pytest.mark.parametrize("change,message", [
    (dict(n_images=29), "hold different images: 30 images against 29"),
    (dict(image_ids=[f"img{i}" for i in range(29)] + ["cat.jpg"]), "image 29 is 'img29' in the first and 'cat.jpg'"),
    (dict(layout=TokenLayout(17, 0, (), tuple(range(1, 17)), (4, 4))), "different patch grids: 2×2 against 4×4"),
    (dict(dtype="bfloat16"), "stored as float16 and bfloat16"),
])
def test_unalignable_stores_are_refused_naming_the_difference(stores, tmp_path, change, message):
    store, _, _, _ = stores
    other, _ = make_store(str(tmp_path / "o.zarr"), **{"n_images": 30, **change})
    with pytest.raises(ValueError, match=message):
        ActivationLoader(store, [A, A], tokens="patches", hook_stores=[None, other])


def test_all_tokens_need_the_same_sequence_and_cls_needs_a_cls_token(stores, tmp_path):
    store, _, other, _ = stores
    with pytest.raises(ValueError, match=r"different token sequences: 6 tokens \(CLS at 0, 1 registers, 4 patches\) "
                                         r"against 5 tokens"):
        ActivationLoader(store, [A, A], tokens="all", hook_stores=[None, other])
    no_cls, _ = make_store(str(tmp_path / "n.zarr"), n_images=30, layout=TokenLayout(5, None, (0,), (1, 2, 3, 4),
                                                                                      (2, 2)))
    with pytest.raises(ValueError, match="no CLS token"):
        ActivationLoader(store, [A, A], tokens="cls", hook_stores=[None, no_cls])
    with pytest.raises(ValueError, match=f"hook 'blocks.5.mlp_in' is not in the store .* it holds {A}, {B}"):
        ActivationLoader(store, [A, "blocks.5.mlp_in"])
