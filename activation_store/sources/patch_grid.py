"""Pixel masks -> labels at a model's patch grid (docs/image-sources.md, "Patch labels").

Models resize an image's shorter side and centre-crop a square (`Preprocess`), so a patch covers a cell of the
centred square the model sees, whose side is the shorter side × crop / size (`crop_fraction`). Masks are pooled
over that square in their own pixels: nothing is resampled, so no interpolation mixes class indices.
"""

from __future__ import annotations

import numpy as np

MIN_SHARE = 0.5
"""Default share of a patch's pixels its plurality class must hold for the patch to be labelled."""


def seen_square(height: int, width: int, crop_fraction: float = 1.0) -> tuple[slice, slice]:
    """Row and column slices of the centred square the model sees, in the original image's pixels."""
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    side = max(1, round(min(height, width) * crop_fraction))
    top, left = (height - side) // 2, (width - side) // 2
    return slice(top, top + side), slice(left, left + side)


def cell_edges(n_pixels: int, n_cells: int) -> np.ndarray:
    """Pixel boundaries [n_cells + 1] of n_cells near-equal cells; refuses a grid finer than the pixels."""
    if n_cells <= 0:
        raise ValueError(f"patch grid must be positive, got {n_cells} cells")
    edges = np.linspace(0, n_pixels, n_cells + 1).round().astype(int)
    if np.any(np.diff(edges) == 0):
        raise ValueError(f"a patch grid of {n_cells} cells is finer than the {n_pixels} pixels it covers")
    return edges


def pool_labels(values: np.ndarray, grid: tuple[int, int], n_values: int, labelled: np.ndarray,
                min_share: float = MIN_SHARE) -> np.ndarray:
    """Plurality pooling: each cell's most frequent value (the lowest on a tie) if it is `labelled` and covers at
    least `min_share` of the cell's pixels, else -1. `values` [H, W] in 0..n_values-1; `labelled` [n_values] bool.
    Returns int64 [rows, cols] of values or -1."""
    rows, cols = int(grid[0]), int(grid[1])
    height, width = values.shape
    row_of = np.searchsorted(cell_edges(height, rows), np.arange(height), side="right") - 1
    col_of = np.searchsorted(cell_edges(width, cols), np.arange(width), side="right") - 1
    cell = row_of[:, None] * cols + col_of[None, :]
    counts = np.bincount((cell * n_values + values).ravel(), minlength=rows * cols * n_values)
    counts = counts.reshape(rows * cols, n_values)
    best = counts.argmax(axis=1)
    share = counts.max(axis=1) / counts.sum(axis=1)
    return np.where(labelled[best] & (share >= min_share), best, -1).reshape(rows, cols)
