"""Monosemanticity score of Pach et al. (2025) for every latent at once (docs/metrics.md).

MS = Σ_{n<m} ã_n ã_m cos(e_n, e_m) / Σ_{n<m} ã_n ã_m, with ã the latent's per-image activation min-max scaled
to [0, 1] and e_n a reference-encoder embedding of image n. With unit-norm embeddings and S = Σ_n ã_n e_n,
Σ_{n<m} ã_n ã_m cos = (‖S‖² − Σ ã_n²) / 2 and Σ_{n<m} ã_n ã_m = ((Σ ã_n)² − Σ ã_n²) / 2, so no pairwise loop
is needed and a sparse activation matrix stays sparse.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from visae.eval.codes import sparse_shape

MS_DEFINITION = (
    "monosemanticity = Pach et al. 2025 MS: activation-weighted mean pairwise cosine of reference-encoder "
    "embeddings over images, activations min-max scaled per latent; reference encoder = {encoder} (docs/metrics.md)."
)


def monosemanticity_scores(acts: sp.spmatrix | np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """acts [n_images, n_latents] per-image activations, embeddings [n_images, D] -> MS [n_latents].

    NaN where undefined.
    """
    acts = sp.csc_matrix(acts, dtype=np.float64)
    n_images = sparse_shape(acts)[0]
    if embeddings.shape[0] != n_images:
        raise ValueError(f"{embeddings.shape[0]} embeddings for {n_images} images; they must match one to one")
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    low, high = _column_min_max(acts)
    span = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_sum = (np.asarray(acts.T @ emb) - low[:, None] * emb.sum(0)[None, :]) / span[:, None]
        sum_a = np.asarray(acts.sum(0)).ravel()
        sum_a2 = np.asarray(acts.multiply(acts).sum(0)).ravel()
        sum_t = (sum_a - n_images * low) / span
        sum_t2 = (sum_a2 - 2 * low * sum_a + n_images * low**2) / span**2
        numerator = (np.square(scaled_sum).sum(1) - sum_t2) / 2
        denominator = (sum_t**2 - sum_t2) / 2
        ms = numerator / denominator
    ms[~(span > 0) | ~(denominator > 1e-12)] = np.nan
    return ms


def _column_min_max(acts: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Column minima and maxima; scipy counts the implicit zeros."""
    return acts.min(0).toarray().ravel(), acts.max(0).toarray().ravel()


def baseline_ms(embeddings: np.ndarray) -> float:
    """MS₀: the score of a latent firing equally on every image, the mean pairwise cosine of the embeddings
    ((‖Σ ê_n‖² − n) / (n(n − 1)) with ê_n unit-norm). NaN for fewer than two images."""
    n = embeddings.shape[0]
    if n < 2:
        return float("nan")
    emb = np.asarray(embeddings, dtype=np.float64)
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    return float((np.square(emb.sum(0)).sum() - n) / (n * (n - 1)))
