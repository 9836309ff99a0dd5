"""Comparing two dictionaries through their decoder directions (docs/metrics.md): MMCS, one-to-one
Hungarian matching, and feature splitting (which wide latents descend from which narrow one)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

COMPARE_DEFINITION = (
    "MMCS(A->B) = mean over A's decoder rows of the max cosine similarity with B's rows; Hungarian matching pairs "
    "latents one to one maximising total cosine (scipy linear_sum_assignment); a wide latent's parent is the "
    "narrow latent with the highest decoder cosine (docs/metrics.md)."
)


def unit_rows(w_dec: torch.Tensor) -> torch.Tensor:
    w = w_dec.detach().double()
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


def cosine_matrix(w_a: torch.Tensor, w_b: torch.Tensor) -> np.ndarray:
    """[d_a, d_b] cosine similarities between decoder rows."""
    if w_a.shape[1] != w_b.shape[1]:
        raise ValueError(
            f"decoders live in different spaces (d_in {w_a.shape[1]} vs {w_b.shape[1]}); compare dictionaries "
            "trained on the same hook width"
        )
    return (unit_rows(w_a) @ unit_rows(w_b).T).numpy()


def mmcs(cos: np.ndarray) -> float:
    """Mean over rows (dictionary A) of the max cosine with any column (dictionary B)."""
    return float(cos.max(1).mean())


def hungarian(cos: np.ndarray) -> dict:
    """One-to-one matching maximising total cosine; min(d_a, d_b) pairs."""
    rows, cols = linear_sum_assignment(cos, maximize=True)
    matched = cos[rows, cols]
    return {
        "rows": rows,
        "cols": cols,
        "cos": matched,
        "mean_cos": float(matched.mean()),
        "frac_above_0_9": float((matched >= 0.9).mean()),
        "frac_above_0_7": float((matched >= 0.7).mean()),
    }


def feature_splitting(cos_narrow_wide: np.ndarray, threshold: float = 0.5) -> dict:
    """Each wide latent's parent (argmax cosine over the narrow dictionary) and each narrow latent's children."""
    parent = cos_narrow_wide.argmax(0)
    parent_cos = cos_narrow_wide[parent, np.arange(cos_narrow_wide.shape[1])]
    children = {
        int(n): np.flatnonzero((parent == n) & (parent_cos >= threshold)).tolist()
        for n in range(cos_narrow_wide.shape[0])
    }
    n_children = np.array([len(c) for c in children.values()])
    return {
        "parent": parent,
        "parent_cos": parent_cos,
        "children": children,
        "threshold": threshold,
        "mean_children": float(n_children.mean()),
        "frac_split": float((n_children >= 2).mean()),
    }
