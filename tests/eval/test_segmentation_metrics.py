"""saev's segmentation metrics (eval/segmentation_metrics.py) against an independent computation with
scikit-learn, and their memory use on sparse codes.

Tolerances: probe losses within 1e-7 of scikit-learn's `LogisticRegression` (lbfgs, tol 1e-10, the same ridge),
so Probe R within 1e-6; AP equal to `average_precision_score` within 1e-12 (both are exact sums); purity and
coverage exact.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss

from visae.eval.average_precision import sparse_average_precision
from visae.eval.probe1d import RIDGE, fit_probes
from visae.eval.segmentation_metrics import Segmentation, segmentation_scores


def synthetic(n_images: int, n_patches: int, n_latents: int, n_classes: int, seed: int = 0):
    """Labels [n_images, n_patches] (with some -1) and dense codes whose latents prefer a class each."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_classes, size=(n_images, n_patches), p=np.linspace(1, 2, n_classes) / np.linspace(
        1, 2, n_classes).sum())
    labels[rng.random(labels.shape) < 0.05] = -1
    flat = labels.reshape(-1)
    dense = np.zeros((flat.size, n_latents))
    for j in range(n_latents):
        rate = np.where(flat == j % n_classes, 0.6, 0.08) * (0.4 + j / n_latents)
        fire = rng.random(flat.size) < rate
        dense[fire, j] = np.round(rng.gamma(2.0, 1.0, fire.sum()), 1)  # rounded: ties in the ranking
    dense[:, -1] = 0.0  # a dead latent
    return labels, dense


def sklearn_probe(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(mean cross-entropy, weight, bias) of scikit-learn's logistic regression with visae's ridge."""
    model = LogisticRegression(C=1 / (len(y) * RIDGE), tol=1e-10, max_iter=100_000).fit(x[:, None], y)
    return log_loss(y, model.predict_proba(x[:, None])[:, 1], labels=[0, 1]), model.coef_[0, 0], model.intercept_[0]


def test_probe_losses_match_sklearn():
    labels, dense = synthetic(20, 50, 6, 3)
    keep = labels.reshape(-1) >= 0
    x, y = dense[keep], labels.reshape(-1)[keep]
    probes = fit_probes(sp.csc_matrix(x), y, 3, block_elements=300)  # several latent and class blocks
    for j in range(6):
        for c in range(3):
            loss, weight, _ = sklearn_probe(x[:, j], (y == c).astype(int))
            assert probes.loss[j, c] == pytest.approx(loss, abs=1e-7)
            assert probes.weight[j, c] == pytest.approx(weight, abs=1e-4, rel=1e-4)
    prior = np.array([log_loss((y == c).astype(int), np.full(len(y), (y == c).mean())) for c in range(3)])
    np.testing.assert_allclose(probes.prior_loss, prior, rtol=1e-12)
    assert probes.converged.all()


def test_separable_probe_reaches_near_zero_loss():
    y = np.array([0, 1] * 50)
    x = np.where(y == 1, 2.0, 0.0)  # fires exactly on class 1
    probes = fit_probes(sp.csc_matrix(x[:, None]), y, 2)
    assert probes.loss[0, 1] < 1e-6 and probes.weight[0, 1] > 0


@pytest.mark.parametrize("direction", [1.0, -1.0, 0.0])
def test_sparse_average_precision_matches_sklearn(direction: float):
    rng = np.random.default_rng(1)
    acts = np.where(rng.random(400) < 0.3, np.round(rng.gamma(2, 1, 400), 1), 0.0)
    y = rng.random(400) < np.where(acts > 2, 0.7, 0.2)
    nz = acts != 0
    got = sparse_average_precision(acts[nz], y[nz], int((~nz).sum()), int(y[~nz].sum()), direction)
    assert got == pytest.approx(average_precision_score(y, direction * acts), abs=1e-12)


def test_segmentation_scores_match_independent_computation():
    n_images, n_patches, n_latents, n_classes = 24, 40, 7, 4
    labels, dense = synthetic(n_images, n_patches, n_latents, n_classes, seed=2)
    scores = segmentation_scores(sp.csr_matrix(dense), Segmentation(labels, list("abcd"), "class"))
    flat = labels.reshape(-1)
    held_out = np.repeat(np.arange(n_images) % 2 == 1, n_patches)
    train, test = ~held_out & (flat >= 0), held_out & (flat >= 0)
    aps, ratios = [], []
    for c in range(n_classes):
        y_train = (flat[train] == c).astype(int)
        fits = [sklearn_probe(dense[train, j], y_train) for j in range(n_latents)]
        losses = np.array([f[0] for f in fits])
        best = int(losses.argmin())
        prior = log_loss(y_train, np.full(len(y_train), y_train.mean()))
        ratios.append(1 - losses[best] / prior)
        loss, weight, bias = fits[best]
        aps.append(average_precision_score(flat[test] == c, weight * dense[test, best] + bias))
        row = scores.summary["per_class"]["abcd"[c]]
        assert row["best_latent"] == best
        assert row["probe_r"] == pytest.approx(ratios[-1], abs=1e-6)
        assert row["ap"] == pytest.approx(aps[-1], abs=1e-12)
    assert scores.summary["probe_r"] == pytest.approx(np.mean(ratios), abs=1e-6)
    assert scores.summary["map"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert scores.summary["coverage_0_3"] == pytest.approx(np.mean(np.array(aps) >= 0.3))
    for k in (16, 64, 256):
        expected = []
        for j in range(n_latents):
            acts = dense[test, j]
            order = np.lexsort((np.arange(acts.size), -acts))[:k]  # ties: the lower row first
            if np.count_nonzero(acts) < k:
                expected.append(np.nan)
                continue
            top = flat[test][order]
            expected.append(np.bincount(top).max() / k)
        np.testing.assert_allclose(scores.columns[f"seg_purity_{k}"], expected, atol=1e-12)
        assert scores.summary[f"purity_{k}"] == pytest.approx(np.nanmean(expected) if np.isfinite(expected).any()
                                                              else None)


def test_memory_scales_with_the_sparse_codes_not_the_dense_array():
    """50,000 patches × 4,096 latents at 8 nonzeros a patch: the dense float64 array would be 1.6 GB, the sparse
    codes take 4.8 MB; the whole computation's traced peak stays within a small multiple of the latter plus the
    [latents, classes] probe tables (the Newton working set is bounded by BLOCK_ELEMENTS by construction)."""
    rng = np.random.default_rng(3)
    n_images, n_patches, n_latents, n_classes, k = 200, 250, 4096, 5, 8
    n_rows = n_images * n_patches
    labels = rng.integers(-1, n_classes, size=(n_images, n_patches))
    cols = rng.integers(0, n_latents, size=(n_rows, k)).reshape(-1)
    codes = sp.csr_matrix((rng.gamma(2, 1, n_rows * k).astype(np.float32), (np.repeat(np.arange(n_rows), k), cols)),
                          shape=(n_rows, n_latents))
    sparse_bytes = codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes
    tracemalloc.start()
    segmentation_scores(codes, Segmentation(labels, list("abcde"), "class"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tables = n_latents * max(n_classes, 256) * 8  # probe tables and the top-256 patch table
    print(f"peak {peak / 2**20:.1f} MiB, sparse codes {sparse_bytes / 2**20:.1f} MiB, tables {tables / 2**20:.1f} MiB")
    assert peak < 12 * sparse_bytes + 4 * tables
    assert peak < n_rows * n_latents * 8 / 20
