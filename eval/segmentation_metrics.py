"""saev's per-latent metrics against a segmentation (per-patch class labels): Probe R, AP/mAP, Purity@k and
Coverage@τ (docs/metrics.md, "Segmentations"), computed on sparse codes, latent block by latent block.

The images are split by store index: even images train the 1-D probes, odd images are held out for AP and
purity. Patches labelled -1 (unlabelled or mixed) are left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from visae.eval.average_precision import sparse_average_precision
from visae.eval.codes import sparse_shape, top_per_column
from visae.eval.probe1d import Probes, fit_probes

PURITY_KS = (16, 64, 256)
COVERAGE_AP = 0.3
PURITY_BLOCK_ENTRIES = 2**24
"""Nonzero codes sorted at once for the top patches of a block of latents."""
SEGMENTATION_DEFINITION = (
    "against the source's segmentation (patch labels; unlabelled or mixed patches left out), even store images "
    "train and odd images are held out. 1-D probe: per (latent, class) a logistic regression on the latent's "
    "activation alone (Newton, ridge 1e-8), L its mean training cross-entropy. probe_r = mean over classes of "
    "1 - L_best / L_prior. AP (held out): the class's lowest-loss latent's probe ranks the patches, "
    "AP = sum of precision x recall step (ties one threshold); map = mean AP over classes with held-out and "
    "training positives. purity_k = mean over latents firing on >= k held-out patches of the share of their top-k "
    "patches carrying their majority class. coverage_0_3 = share of those classes with AP >= 0.3 "
    "(docs/metrics.md)."
)


@dataclass
class Segmentation:
    """Per-patch class labels of the evaluated images."""

    labels: np.ndarray  # int64 [n_images, n_patches], class index or -1 (unlabelled / mixed: left out)
    class_names: list[str]
    factor: str  # the store's patch-label array they come from

    @classmethod
    def from_store(cls, store, n_images: int) -> Segmentation | None:
        """The store's segmentation (its `segmentation` attribute names the patch-label array; a named `background`
        makes -1 a class of its own), or None when it has none."""
        spec = store.segmentation
        if not spec or spec["factor"] not in store.patch_labels:
            return None
        grid = np.asarray(store.patch_labels[spec["factor"]][:n_images]).astype(np.int64)
        names = list(store.factor_values[spec["factor"]])
        labels = grid.reshape(grid.shape[0], -1)
        if spec.get("background"):
            labels = np.where(labels < 0, len(names), labels)
            names.append(spec["background"])
        return cls(labels, names, spec["factor"])


@dataclass
class SegmentationScores:
    summary: dict  # the figures, per-class table and split sizes
    columns: dict[str, np.ndarray | list]  # per-latent feature-table columns


def segmentation_scores(patch_codes: sp.spmatrix, seg: Segmentation, device: str = "cpu") -> SegmentationScores:
    """All of saev's figures for `patch_codes` [n_images × n_patches, n_latents] (rows image-major, patches in
    grid order, as `seg.labels` flattens)."""
    n_images, n_patches = seg.labels.shape
    if sparse_shape(patch_codes)[0] != n_images * n_patches:
        raise ValueError(f"{sparse_shape(patch_codes)[0]} patch rows of codes for {n_images} images of {n_patches} "
                         "patch labels; the codes and the segmentation must cover the same images")
    labels = seg.labels.reshape(-1)
    held_out = np.repeat(np.arange(n_images) % 2 == 1, n_patches)
    train_rows, test_rows = np.flatnonzero(~held_out & (labels >= 0)), np.flatnonzero(held_out & (labels >= 0))
    rows = sp.csr_matrix(patch_codes)
    train, test = sp.csc_matrix(rows[train_rows]), sp.csc_matrix(rows[test_rows])
    del rows
    n_classes = len(seg.class_names)
    probes = fit_probes(train, labels[train_rows], n_classes, device=device)
    per_class = _per_class(probes, test, labels[test_rows], labels[train_rows], n_classes)
    purity = _purity(test, labels[test_rows])
    measured = [c for c, row in enumerate(per_class) if np.isfinite(row["ap"])]
    ap = np.array([per_class[c]["ap"] for c in measured])
    ratio = 1 - probes.loss / probes.prior_loss[None, :]
    summary = {
        "factor": seg.factor, "n_classes": n_classes, "n_classes_measured": len(measured),
        "probe_r": _mean([per_class[c]["probe_r"] for c in range(n_classes)]),
        "map": float(ap.mean()) if ap.size else None,
        **{f"purity_{k}": _mean(purity[k]) for k in PURITY_KS},
        "coverage_0_3": float((ap >= COVERAGE_AP).mean()) if ap.size else None,
        "n_train_patches": int(train_rows.size), "n_held_out_patches": int(test_rows.size),
        "split": "even store images train the probes, odd images are held out",
        "per_class": {seg.class_names[c]: per_class[c] for c in range(n_classes)},
    }
    best_class = np.where(np.isfinite(ratio).any(1), np.argmax(np.where(np.isfinite(ratio), ratio, -np.inf), 1), -1)
    columns: dict[str, np.ndarray | list] = {
        "seg_best_class": [seg.class_names[c] if c >= 0 else None for c in best_class],
        "seg_probe_r": np.where(best_class >= 0, ratio[np.arange(len(best_class)), np.clip(best_class, 0, None)],
                                np.nan),
        **{f"seg_purity_{k}": purity[k] for k in PURITY_KS},
    }
    return SegmentationScores(summary, columns)


def _per_class(probes: Probes, test: sp.csc_matrix, test_labels: np.ndarray, train_labels: np.ndarray,
               n_classes: int) -> list[dict]:
    """Per class: its best latent (lowest training loss), Probe R, and the held-out AP of that latent's probe."""
    n_test = sparse_shape(test)[0]
    test_count = np.bincount(test_labels, minlength=n_classes)
    train_count = np.bincount(train_labels, minlength=n_classes)
    out = []
    for c in range(n_classes):
        row: dict = {"n_train": int(train_count[c]), "n_held_out": int(test_count[c]), "best_latent": None,
                     "probe_r": None, "ap": float("nan")}
        loss = probes.loss[:, c]
        if np.isfinite(loss).any():
            j = int(np.nanargmin(loss))
            row["best_latent"], row["probe_r"] = j, float(1 - loss[j] / probes.prior_loss[c])
            lo, hi = test.indptr[j], test.indptr[j + 1]
            positive = test_labels[test.indices[lo:hi]] == c
            row["ap"] = sparse_average_precision(test.data[lo:hi], positive, n_test - (hi - lo),
                                                 int(test_count[c] - positive.sum()), probes.weight[j, c])
        out.append(row)
    return out


def _purity(test: sp.csc_matrix, test_labels: np.ndarray) -> dict[int, np.ndarray]:
    """Purity@k [n_latents] for each k in PURITY_KS; NaN for latents firing on fewer than k held-out patches."""
    n_latents, k_max = sparse_shape(test)[1], max(PURITY_KS)
    top = np.full((n_latents, k_max), -1, dtype=np.int64)
    start = 0
    while start < n_latents:  # blocks of latents with about PURITY_BLOCK_ENTRIES nonzeros between them
        stop = max(int(np.searchsorted(test.indptr, test.indptr[start] + PURITY_BLOCK_ENTRIES, "right")) - 1,
                   start + 1)
        stop = min(stop, n_latents)
        top[start:stop] = top_per_column(sp.csc_matrix(test[:, start:stop]), k_max)[0]
        start = stop
    labels = test_labels[np.clip(top, 0, None)]
    n_classes = int(test_labels.max(initial=0)) + 1
    out = {}
    for k in PURITY_KS:
        counts = np.zeros((n_latents, n_classes), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(n_latents), k), labels[:, :k].ravel()), 1)
        out[k] = np.where(top[:, k - 1] >= 0, counts.max(axis=1) / k, np.nan)  # a full top-k only
    return out


def _mean(values) -> float | None:
    finite = np.asarray([v for v in values if v is not None], dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else None
