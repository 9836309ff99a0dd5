"""Exact AUROC of every latent as a detector of every label value, on sparse activations.

AUROC is the Mann-Whitney U statistic with average ranks for ties. Zeros (the bulk of SAE codes) form one
tie group per latent whose rank is known in closed form, so only the nonzeros are ranked: the cost is
O(nnz log nnz) for all latents at once instead of O(N log N) per latent.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from visae.eval.codes import sparse_shape

AUROC_DEFINITION = (
    "AUROC of a latent's activation as a detector of a factor value (ties averaged), patch-level where the "
    "source has patch labels (the lower of the AUROC against all other patches, background included, and against "
    "the other labelled patches only), else image-level on the per-image max. "
    "best_factor/best_auroc = the value with the highest AUROC; coverage_0_9 = share of factor values detected "
    "by some latent with AUROC >= 0.9 (docs/metrics.md)."
)


def auroc_matrix(codes: sp.spmatrix, labels: np.ndarray, n_values: int) -> np.ndarray:
    """AUROC [n_latents, n_values] of each column of `codes` [N, n_latents] for labels [N] in 0..n_values-1.

    Rows labelled -1 are negatives for every value. NaN where a value has no positives or no negatives.
    """
    codes = sp.csc_matrix(codes, dtype=np.float64)
    codes.sum_duplicates()
    codes.eliminate_zeros()
    labels = np.asarray(labels)
    n_rows, n_latents = sparse_shape(codes)
    if labels.shape != (n_rows,):
        raise ValueError(f"labels have shape {labels.shape}, expected ({n_rows},)")
    rel_rank, zero_rank = _nonzero_ranks(codes)
    known = labels >= 0
    onehot = sp.csr_matrix(
        (np.ones(int(known.sum())), (np.flatnonzero(known), labels[known])), shape=(n_rows, n_values)
    )
    positives = np.bincount(labels[known], minlength=n_values).astype(np.float64)
    rank_sum = zero_rank[:, None] * positives[None, :] + (rel_rank.T @ onehot).toarray()
    negatives = n_rows - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    auc[:, (positives == 0) | (negatives == 0)] = np.nan
    return auc


def _nonzero_ranks(codes: sp.csc_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """Per-column average ranks, as (rank − rank of a zero) on the nonzero pattern, and the zero rank per column."""
    n_rows, n_latents = sparse_shape(codes)
    per_col = np.diff(codes.indptr)
    col = np.repeat(np.arange(n_latents), per_col)
    order = np.lexsort((codes.data, col))
    s_col, s_val = col[order], codes.data[order]
    pos = np.arange(order.size) - codes.indptr[s_col]
    new_group = np.ones(order.size, dtype=bool)
    new_group[1:] = (s_col[1:] != s_col[:-1]) | (s_val[1:] != s_val[:-1])
    group = np.cumsum(new_group) - 1
    tie_rank = pos[new_group] + (np.bincount(group) - 1) / 2.0 + 1.0
    n_zero = n_rows - per_col
    n_neg = np.bincount(col[codes.data < 0], minlength=n_latents)
    rank = tie_rank[group] + np.where(s_val > 0, n_zero[s_col], 0)
    zero_rank = n_neg + (n_zero + 1) / 2.0
    rel = sp.csr_matrix((rank - zero_rank[s_col], (codes.indices[order], s_col)), shape=codes.shape)
    return rel, zero_rank


def best_matches(auc: np.ndarray, value_names: list[str]) -> tuple[list[str | None], np.ndarray]:
    """Each latent's best-detected value name and its AUROC (None / NaN where nothing is measurable)."""
    if auc.size == 0 or np.isnan(auc).all():
        return [None] * auc.shape[0], np.full(auc.shape[0], np.nan)
    filled = np.where(np.isnan(auc), -np.inf, auc)
    best = filled.argmax(1)
    best_auc = filled[np.arange(auc.shape[0]), best]
    names = [value_names[b] if np.isfinite(a) else None for b, a in zip(best, best_auc)]
    return names, np.where(np.isfinite(best_auc), best_auc, np.nan)


def coverage(auc: np.ndarray, threshold: float = 0.9) -> float:
    """Share of (measurable) values detected by at least one latent with AUROC >= threshold."""
    measurable = ~np.isnan(auc).all(0)
    if not measurable.any():
        return float("nan")
    best = np.nanmax(np.where(np.isnan(auc), -np.inf, auc), axis=0)[measurable]
    return float((best >= threshold).mean())
