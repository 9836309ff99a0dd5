"""Moran's I over the patch grid, from sparse codes, against a direct computation."""

import numpy as np
import pytest
import scipy.sparse as sp

from visae.eval.spatial_coherence import moran_i, rook_pairs


def direct_moran(a: np.ndarray, grid: tuple[int, int]) -> float:
    """Moran's I with a dense rook weight matrix, straight from the formula."""
    n = grid[0] * grid[1]
    w = np.zeros((n, n))
    for i in range(grid[0]):
        for j in range(grid[1]):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < grid[0] and 0 <= j + dj < grid[1]:
                    w[i * grid[1] + j, (i + di) * grid[1] + j + dj] = 1
    z = a - a.mean()
    return float(n / w.sum() * z @ w @ z / (z @ z))


def test_rook_pairs_are_the_grid_edges():
    assert len(rook_pairs((3, 4))) == 3 * 3 + 2 * 4
    assert {tuple(p) for p in rook_pairs((2, 2))} == {(0, 1), (2, 3), (0, 2), (1, 3)}


def test_moran_matches_the_direct_formula_on_constructed_grids():
    grid = (4, 5)
    half = np.repeat([[1.0] * 5, [1.0] * 5, [0.0] * 5, [0.0] * 5], 1, axis=0).ravel()  # top half on
    checker = (np.indices(grid).sum(0) % 2).ravel().astype(float)  # alternating: I = -1
    spike = np.eye(20)[7] * 3.0
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 1, 20) * (rng.random(20) < 0.5)
    images = [half, checker, spike, noisy]
    codes = np.stack([np.concatenate(images), np.concatenate([half, half, np.zeros(20), checker])], 1)
    got = moran_i(sp.csc_matrix(codes), grid)
    want0 = np.mean([direct_moran(a, grid) for a in images])
    want1 = np.mean([direct_moran(a, grid) for a in (half, half, checker)])  # the empty image is skipped
    assert got == pytest.approx([want0, want1])
    assert direct_moran(checker, grid) == pytest.approx(-1.0)
    assert direct_moran(half, grid) > 0.6


def test_latents_that_never_fire_or_fire_evenly_are_nan():
    codes = np.zeros((2 * 9, 2))
    codes[:, 1] = 1.0  # the same value on every patch: no spread, I undefined
    assert np.isnan(moran_i(sp.csc_matrix(codes), (3, 3))).all()


def test_rows_must_split_into_images():
    with pytest.raises(ValueError, match="do not split"):
        moran_i(sp.csc_matrix(np.ones((10, 1))), (3, 3))
