"""Hooks read together, token by token: several hooks of one store, or hooks of stores harvested from different
models on the same images (docs/activation-store.md, "Several hooks at once").

A `HookColumn` is one hook of one store plus the positions, within that store's kept tokens, of the token kind
being read. `align_columns` builds them and refuses what cannot be aligned, naming the difference: stores whose
images differ (count, ids or order), whose token layouts differ for the kind read (the patch grid, the number of
CLS or register tokens), or whose stored dtypes differ. The i-th image of one store is then the i-th of the
other, and the j-th token of the kind read is the same token position (the same patch of the grid) in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visae.activation_store.layout import TokenLayout
from visae.activation_store.store import ActivationStore


@dataclass(frozen=True)
class HookColumn:
    """One hook of one store as a loader reads it: `token_index` picks the kind read from the kept tokens
    (None: all of them, in order)."""

    store: ActivationStore
    hook: str
    token_index: np.ndarray | None

    @property
    def d(self) -> int:
        return self.store.d(self.hook)

    @property
    def tokens_per_image(self) -> int:
        return self.store.layout.n_tokens if self.token_index is None else len(self.token_index)


def token_index(store: ActivationStore, kind: str) -> np.ndarray | None:
    """Positions of `kind` among the store's kept tokens (None: all of them), refusing a kind it does not hold."""
    layout = store.layout
    try:
        index = layout.indices(kind)
    except ValueError as err:
        raise ValueError(f"{err} (the store at {store.path} keeps '{store.token_kind}' tokens)") from None
    if not index:
        raise ValueError(f"the store at {store.path} keeps no '{kind}' tokens (it holds '{store.token_kind}' "
                         "tokens); choose another token kind or re-harvest")
    return None if index == list(range(layout.n_tokens)) else np.asarray(index)


def align_columns(pairs: Sequence[tuple[ActivationStore, str]], kind: str) -> list[HookColumn]:
    """One column per (store, hook), after checking every other store against the first (see the module)."""
    if not pairs:
        raise ValueError("no hook to read; give at least one")
    first = pairs[0][0]
    columns = []
    for store, hook in pairs:
        store.acts(hook)  # refuses a hook the store lacks, naming the ones it holds
        if store is not first and store.path != first.path:
            check_aligned(first, store, kind)
        columns.append(HookColumn(store, hook, token_index(store, kind)))
    return columns


def check_aligned(a: ActivationStore, b: ActivationStore, kind: str) -> None:
    """Refuse two stores whose tokens of `kind` cannot be paired one to one, naming the first difference."""
    where = f"the stores {a.path} and {b.path}"
    if a.n_images != b.n_images:
        raise ValueError(f"{where} hold different images: {a.n_images} images against {b.n_images}; harvest both "
                         "models from the same image source and settings")
    differ = np.flatnonzero(a.image_ids != b.image_ids)
    if differ.size:
        i = int(differ[0])
        raise ValueError(f"{where} hold different images: image {i} is {a.image_ids[i]!r} in the first and "
                         f"{b.image_ids[i]!r} in the second ({differ.size} of {a.n_images} differ); harvest both "
                         "models from the same image source and settings")
    layout_a, layout_b = a.layout, b.layout
    if kind in ("all", "patches") and layout_a.grid != layout_b.grid:
        raise ValueError(f"{where} have different patch grids: {_grid(layout_a)} against {_grid(layout_b)}; their "
                         "patches cannot be paired (harvest at image sizes giving the same grid)")
    if kind == "all" and layout_a != layout_b:
        raise ValueError(f"{where} keep different token sequences: {describe(layout_a)} against "
                         f"{describe(layout_b)}; read tokens 'patches' (or 'cls') to pair them")
    count_a, count_b = len(_indices(layout_a, kind, a)), len(_indices(layout_b, kind, b))
    if count_a != count_b:
        raise ValueError(f"{where} keep {count_a} against {count_b} '{kind}' tokens per image; they cannot be "
                         "paired one to one")
    if a.dtype != b.dtype:
        raise ValueError(f"{where} are stored as {a.dtype} and {b.dtype}; harvest both with the same --dtype")


def describe(layout: TokenLayout) -> str:
    """A token layout in words, e.g. `69 tokens (CLS at 0, 4 registers, 64 patches)`."""
    cls = "no CLS" if layout.cls_index is None else f"CLS at {layout.cls_index}"
    return (f"{layout.n_tokens} tokens ({cls}, {len(layout.register_indices)} registers, "
            f"{len(layout.patch_indices)} patches)")


def _grid(layout: TokenLayout) -> str:
    return f"{layout.grid[0]}×{layout.grid[1]}"


def _indices(layout: TokenLayout, kind: str, store: ActivationStore) -> list[int]:
    try:
        return layout.indices(kind)
    except ValueError as err:
        raise ValueError(f"{err} (the store at {store.path})") from None
