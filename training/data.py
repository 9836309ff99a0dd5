"""Token batches for training: the store's loader cut into fixed-size batches on the training device."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.activation_store.layout import canonical_hook
from visae.activation_store.loader import ActivationLoader
from visae.activation_store.store import ActivationStore
from visae.activation_store.verify import check_store

if TYPE_CHECKING:
    from jaxtyping import Float


def open_store(path: str, hook: str) -> tuple[ActivationStore, str]:
    """The store at `path` and `hook` in its canonical spelling (negative block indices resolved), after the
    store's cheap verification (`activation_store.verify.check_store`)."""
    store = ActivationStore.open(path)
    hook = store_hook(store, hook)
    if not store.complete:
        raise ValueError(f"the store at {path} is not complete; finish it by rerunning its harvest")
    return check_store(store), hook


def store_hook(store: ActivationStore, hook: str) -> str:
    """`hook` in its canonical spelling in `store`, refused (naming the hooks it holds) if the store lacks it."""
    n_blocks = store.attrs["model"].get("n_blocks")
    if n_blocks and hook != "embed":
        try:
            hook = canonical_hook(hook, int(n_blocks))
        except ValueError:
            pass  # reported below with the hooks the store holds
    if hook not in store.hooks:
        raise ValueError(f"the store at {store.path} has no hook {hook!r}; it holds {', '.join(store.hooks)} "
                         "(choose one of those, or harvest that hook)")
    return hook


def mean_norm(loader: ActivationLoader) -> float:
    """E‖x‖ over the store (cached in it); the SAE scales its inputs by √d / E‖x‖ (docs/training-recipe.md)."""
    return mean_norms(loader)[0]


def mean_norms(loader: ActivationLoader) -> list[float]:
    """`mean_norm` of each hook the loader reads, in order."""
    norms = [stats["mean_norm"] for stats in loader.hook_stats()]
    for norm, column in zip(norms, loader.columns):
        if not norm > 0:
            raise ValueError(f"the activations of {column.hook} in {column.store.path} are all zero; nothing to learn")
    return norms


def loader_device(device: torch.device) -> torch.device | None:
    """Where the loader builds batches for training on `device`: on a GPU the device path (each fill copied there
    once in its stored dtype, shuffled, batched and cast there; docs/activation-store.md, "Reading"), on the CPU
    the host path (None)."""
    return device if device.type == "cuda" else None


class BatchStream:
    """Endless full batches of raw activations on `device`, in float32 (the SAE applies its input scale).

    A loader built with `device=loader_device(device)` already serves them there (the move below is then a no-op).

    The loader's last batch of an epoch can be short; it is skipped so every step sees exactly
    `loader.batch_size` tokens (at most one batch per epoch and rank goes unused). The loader's own
    state (epoch, position) is the stream's state, so checkpoints record `loader.state_dict()`.
    """

    def __init__(self, loader: ActivationLoader, device: torch.device):
        available = loader.rank_tokens_per_epoch()
        if available < loader.batch_size:
            raise ValueError(f"the store at {loader.store.path} holds {available} {loader.hook} tokens for this "
                             f"process, fewer than one batch of {loader.batch_size}; lower batch_size or harvest "
                             "more images")
        self.loader, self.device = loader, device
        self._batches = self._generate()

    def _generate(self) -> Generator[Float[Tensor, "batch d_in"], None, None]:
        while True:
            for x in self.loader:
                if x.shape[0] == self.loader.batch_size:
                    yield x.to(self.device, torch.float32, non_blocking=True)

    def __next__(self) -> Float[Tensor, "batch d_in"]:
        return next(self._batches)

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the loader's reader threads."""
        self._batches.close()
