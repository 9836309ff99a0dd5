"""Spatial coherence of every latent: Moran's I of its activation map over the patch grid (docs/metrics.md).

For one image and one latent with activations a_i on the N patches of the grid, and rook (4-neighbour) weights
w_ij = 1 for patches sharing an edge (W = Σ_ij w_ij, both directions counted):

    I = (N / W) · Σ_ij w_ij (a_i − ā)(a_j − ā) / Σ_i (a_i − ā)²

Expanding the numerator, Σ_ij w_ij (a_i − ā)(a_j − ā) = C − 2ā·D + ā²·W with C = Σ_ij w_ij a_i a_j and
D = Σ_i deg_i a_i, so only sums over the nonzero codes are needed: a sparse matrix stays sparse. A latent's
coherence is the mean of I over the images where it fires on at least one patch and its map is not constant.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from visae.eval.codes import sparse_shape

MORAN_DEFINITION = (
    "moran_i = Moran's I of the latent's activation over the patch grid, rook (4-neighbour) weights, averaged over "
    "the images where it fires on a patch (constant maps skipped); about 0 for spatial noise, near 1 for a "
    "latent that fires on contiguous regions (docs/metrics.md)."
)


def rook_pairs(grid: tuple[int, int]) -> np.ndarray:
    """Every unordered pair of edge-sharing patches of a row-major grid: int64 [n_pairs, 2]."""
    rows, cols = grid
    index = np.arange(rows * cols).reshape(rows, cols)
    horizontal = np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1)
    vertical = np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], 1)
    return np.concatenate([horizontal, vertical]).astype(np.int64)


def moran_i(patch_codes: sp.spmatrix, grid: tuple[int, int]) -> np.ndarray:
    """Mean Moran's I per latent [n_latents] of `patch_codes` [n_images × rows·cols, n_latents] (rows image-major,
    patches row-major); NaN for a latent with no image where it is measurable."""
    rows, cols = grid
    n = rows * cols
    n_rows, n_latents = sparse_shape(patch_codes)
    if n < 2 or n_rows % n:
        raise ValueError(f"{n_rows} patch rows do not split into images of a {rows}x{cols} grid")
    n_images = n_rows // n
    codes = sp.csr_matrix(patch_codes, dtype=np.float64)
    pairs = rook_pairs(grid)
    weight_total = 2.0 * len(pairs)
    degree = np.bincount(pairs.ravel(), minlength=n).astype(np.float64)
    per_image = sp.csr_matrix((np.ones(n_rows), (np.repeat(np.arange(n_images), n), np.arange(n_rows))),
                              shape=(n_images, n_rows))
    s1 = sp.csr_matrix(per_image @ codes)
    s2 = sp.csr_matrix(per_image @ codes.multiply(codes))
    d = sp.csr_matrix(per_image @ sp.diags(np.tile(degree, n_images)) @ codes)
    first = (np.arange(n_images)[:, None] * n + pairs[None, :, 0]).ravel()
    second = (np.arange(n_images)[:, None] * n + pairs[None, :, 1]).ravel()
    pair_image = sp.csr_matrix((np.ones(first.size), (np.repeat(np.arange(n_images), len(pairs)),
                                                      np.arange(first.size))), shape=(n_images, first.size))
    c = sp.csr_matrix(2.0 * (pair_image @ sp.csr_matrix(codes[first].multiply(codes[second]))))
    image, latent = s1.nonzero()  # every (image, latent) where the latent fires on a patch
    sum1 = np.asarray(s1[image, latent]).ravel()
    mean = sum1 / n
    spread = np.asarray(s2[image, latent]).ravel() - sum1 * mean
    numerator = np.asarray(c[image, latent]).ravel() - 2 * mean * np.asarray(d[image, latent]).ravel() \
        + mean**2 * weight_total
    measurable = spread > 1e-12 * np.maximum(np.asarray(s2[image, latent]).ravel(), 1e-300)
    value = (n / weight_total) * numerator[measurable] / spread[measurable]
    total = np.bincount(latent[measurable], weights=value, minlength=n_latents)
    count = np.bincount(latent[measurable], minlength=n_latents)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)
