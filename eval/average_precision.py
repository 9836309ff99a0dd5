"""Average precision of one sparse score column, exactly as scikit-learn's `average_precision_score` defines it.

AP = Σ_i (R_i − R_{i−1}) · P_i over the distinct score thresholds, highest first; tied scores form one threshold.
The zero entries of a sparse column share one score, so they are one threshold whose size and positive count
are known: the cost is O(nnz log nnz), whatever the number of rows.
"""

from __future__ import annotations

import numpy as np


def sparse_average_precision(values: np.ndarray, positive: np.ndarray, n_zero: int, n_zero_positive: int,
                             direction: float = 1.0) -> float:
    """AP of ranking rows by `direction` × activation: `values` [nnz] are the nonzero activations and `positive`
    [nnz] whether their row is a positive; `n_zero` rows have activation 0, `n_zero_positive` of them positive.
    `direction` is the sign of the probe's weight (a negative weight ranks low activations first); 0 ties every
    row. NaN without positives."""
    n_pos = int(np.count_nonzero(positive)) + n_zero_positive
    if n_pos == 0:
        return float("nan")
    score = np.append(np.sign(direction) * np.asarray(values, dtype=np.float64), 0.0)
    weight = np.append(np.ones(len(values)), n_zero)
    hits = np.append(np.asarray(positive, dtype=np.float64), n_zero_positive)
    order = np.argsort(-score, kind="stable")
    score, weight, hits = score[order], weight[order], hits[order]
    last_of_group = np.append(score[1:] != score[:-1], True)
    seen = np.cumsum(weight)[last_of_group]
    true_pos = np.cumsum(hits)[last_of_group]
    recall = true_pos / n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, true_pos / seen, 0.0)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
