"""One-vs-rest linear probes on raw activations, scored by held-out AUROC: how well each label value can be read
from the activation vector at all (docs/metrics.md, "Probe ceiling").

Per value, a logistic regression on the standardised activation vector (every value fitted at once: the losses are
independent), minimising the mean binary cross-entropy plus (RIDGE/2)·‖w‖², by scipy's L-BFGS-B (at most MAX_ITER
iterations) from w = 0 and b = the logit of the value's share. Rows labelled -1 are negatives for every value.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit

from visae.eval.auroc import auroc_matrix

RIDGE = 1e-4
MAX_ITER = 100


def fit_linear_probes(x: np.ndarray, labels: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights [d, n_values] and biases [n_values] on standardised features (see `probe_scores`)."""
    z = _standardise(x, x)
    target = _onehot(labels, n_values)
    share = np.clip(target.mean(0), 1e-6, 1 - 1e-6)
    d = z.shape[1]

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        weight, bias = params[: d * n_values].reshape(d, n_values), params[d * n_values:]
        logits = z @ weight + bias
        # per value: mean BCE over rows (log(1 + e^l) - y·l, computed stably) plus the ridge term
        loss = (np.logaddexp(0, logits) - target * logits).sum() / len(z) + RIDGE / 2 * np.square(weight).sum()
        residual = (expit(logits) - target) / len(z)
        return float(loss), np.concatenate([(z.T @ residual + RIDGE * weight).ravel(), residual.sum(0)])

    start = np.concatenate([np.zeros(d * n_values), np.log(share / (1 - share))])
    fitted = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITER}).x
    return fitted[: d * n_values].reshape(d, n_values), fitted[d * n_values:]


def probe_auroc(train_x: np.ndarray, train_labels: np.ndarray, test_x: np.ndarray, test_labels: np.ndarray,
                n_values: int, strict: bool = False) -> np.ndarray:
    """Held-out AUROC [n_values] of probes fitted on the training rows; NaN where a value has no training or no
    held-out positives. `strict`: the lower of the AUROC against every other row and against the other labelled
    rows only, as the patch-level AUROC of latents (docs/metrics.md)."""
    train_labels, test_labels = np.asarray(train_labels, np.int64), np.asarray(test_labels, np.int64)
    weight, bias = fit_linear_probes(train_x, train_labels, n_values)
    scores = probe_scores(train_x, test_x, weight, bias)
    auc = _diagonal_auroc(scores, test_labels, n_values)
    if strict:
        labelled = test_labels >= 0
        auc = np.fmin(auc, _diagonal_auroc(scores[labelled], test_labels[labelled], n_values))
    trained = np.bincount(train_labels[train_labels >= 0], minlength=n_values) > 0
    return np.where(trained, auc, np.nan)


def probe_scores(train_x: np.ndarray, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits [rows, n_values] of `x`, standardised with the training rows' statistics."""
    return _standardise(train_x, x) @ weight + bias


def _standardise(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    mean, std = reference.mean(0), reference.std(0) + 1e-6
    return (x - mean) / std


def _onehot(labels: np.ndarray, n_values: int) -> np.ndarray:
    out = np.zeros((len(labels), n_values), dtype=np.float32)
    known = labels >= 0
    out[np.flatnonzero(known), labels[known]] = 1
    return out


def _diagonal_auroc(scores: np.ndarray, labels: np.ndarray, n_values: int) -> np.ndarray:
    """AUROC of score column v for value v (scores shifted positive: the sparse AUROC treats 0 as no firing)."""
    if len(labels) == 0:
        return np.full(n_values, np.nan)
    shifted = scores - scores.min() + 1.0
    return np.diagonal(auroc_matrix(sp.csc_matrix(shifted), labels, n_values)).copy()
