"""Per-latent interpretability read off the sparse codes: label purity/entropy (image labels and patch labels)
and ground-truth factor AUROC with Coverage@0.9 (docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from visae.eval.auroc import auroc_matrix, best_matches, coverage
from visae.eval.codes import Codes, sparse_shape
from visae.eval.labels import purity_and_entropy


@dataclass
class GroundTruth:
    """Labels of the evaluated images (first n store images)."""

    labels: np.ndarray  # int [n_images], -1 = none
    label_names: list[str] | None
    factors: dict[str, np.ndarray]  # name -> int [n_images]
    factor_values: dict[str, list[str]]
    patch_labels: dict[str, np.ndarray]  # name -> int16 [n_images, rows, cols], -1 = background

    @classmethod
    def from_store(cls, store, n_images: int) -> GroundTruth:
        values = store.factor_values
        return cls(
            labels=np.asarray(store.labels[:n_images]),
            label_names=store.label_names,
            factors={k: np.asarray(v[:n_images]) for k, v in store.factors.items() if k in values},
            factor_values=values,
            patch_labels={k: np.asarray(v[:n_images]) for k, v in store.patch_labels.items() if k in values},
        )

    def label_name(self, label: int) -> str | None:
        if label < 0:
            return None
        return self.label_names[label] if self.label_names and label < len(self.label_names) else str(label)


def label_purity(top_images: np.ndarray, truth: GroundTruth) -> dict[str, np.ndarray | list]:
    """purity@k, entropy and majority label of each latent's top images."""
    top_labels = np.where(top_images >= 0, truth.labels[np.clip(top_images, 0, None)], -1)
    purity, entropy, majority = purity_and_entropy(top_labels)
    return {"purity": purity, "label_entropy": entropy, "top_label": [truth.label_name(m) for m in majority]}


def patch_purity(patch_image: np.ndarray, patch_pos: np.ndarray, truth: GroundTruth) -> dict[str, np.ndarray | list]:
    """Purity of the top patches' labels for the factor where it is highest (background is its own label)."""
    n_latents = patch_image.shape[0]
    best = np.full(n_latents, np.nan)
    best_label: list[str | None] = [None] * n_latents
    valid = patch_image >= 0
    for name, grid_labels in truth.patch_labels.items():
        flat = grid_labels.reshape(grid_labels.shape[0], -1).astype(np.int64)
        background = len(truth.factor_values[name])
        labels = flat[np.clip(patch_image, 0, None), np.clip(patch_pos, 0, None)]
        labels = np.where(labels < 0, background, labels)
        purity, _, majority = purity_and_entropy(np.where(valid, labels, -1))
        names = truth.factor_values[name] + ["background"]
        better = np.nan_to_num(purity, nan=-1) > np.nan_to_num(best, nan=-1)
        best[better] = purity[better]
        for i in np.flatnonzero(better):
            best_label[i] = f"{name}={names[majority[i]]}"
    return {"patch_purity": best, "patch_top_label": best_label}


@dataclass
class FactorMatch:
    auc: np.ndarray  # [n_latents, n_values] over every factor value
    value_names: list[str]  # "factor=value"
    level: list[str]  # "patch" or "image" per value

    def per_latent(self) -> dict[str, np.ndarray | list]:
        names, best = best_matches(self.auc, self.value_names)
        return {"best_factor": names, "best_auroc": best}

    def summary(self, threshold: float = 0.9) -> dict:
        if self.auc.size == 0:
            return {"coverage_0_9": None, "factor_auroc": {}}
        best_per_value = np.nanmax(np.where(np.isnan(self.auc), -np.inf, self.auc), axis=0)
        per_factor: dict[str, dict[str, float | None]] = {}
        for name, value in zip(self.value_names, best_per_value):
            factor, _, val = name.partition("=")
            per_factor.setdefault(factor, {})[val] = float(value) if np.isfinite(value) else None
        by_level = {
            f"coverage_0_9_{lvl}": coverage(
                self.auc[:, [i for i, level in enumerate(self.level) if level == lvl]], threshold
            )
            for lvl in sorted(set(self.level))
        }
        return {
            "coverage_0_9": coverage(self.auc, threshold),
            **by_level,
            "factor_auroc": per_factor,
            "factor_level": {n.partition("=")[0]: lvl for n, lvl in zip(self.value_names, self.level)},
        }


def image_factor_auroc(codes: Codes, truth: GroundTruth) -> FactorMatch:
    """AUROC of every latent's per-image activation (max over every token) for every image-level factor value."""
    blocks, names = [], []
    for factor, values in truth.factor_values.items():
        if factor in truth.factors:
            blocks.append(auroc_matrix(codes.images_all_tokens, truth.factors[factor].astype(np.int64), len(values)))
            names += [f"{factor}={v}" for v in values]
    auc = np.concatenate(blocks, axis=1) if blocks else np.zeros((sparse_shape(codes.images)[1], 0))
    return FactorMatch(auc=auc, value_names=names, level=["image"] * len(names))


def factor_auroc(codes: Codes, truth: GroundTruth) -> FactorMatch:
    """AUROC of every latent for every factor value: patch-level where patch labels exist and the codes cover
    patch tokens, image-level otherwise (the latent's max over every token of the image, CLS and registers
    included: a model writes image-level facts such as an object count into its CLS token).

    Patch level takes the lower of two AUROCs: against all other patches (background included) and against the
    other labelled patches only. The first alone rewards a generic object detector (most negatives are
    background), the second alone rewards a latent that also fires on the background."""
    blocks, names, levels = [], [], []
    patch_rows = codes.patch_rows() if codes.layout.patch_indices else np.zeros(0, dtype=np.int64)
    patch_codes = sp.csc_matrix(codes.tokens.tocsr()[patch_rows]) if patch_rows.size else None
    for factor, values in truth.factor_values.items():
        if patch_codes is not None and factor in truth.patch_labels:
            labels, matrix, level = truth.patch_labels[factor].reshape(-1).astype(np.int64), patch_codes, "patch"
        elif factor in truth.factors:
            labels, matrix, level = truth.factors[factor].astype(np.int64), codes.images_all_tokens, "image"
        else:
            continue
        auc = auroc_matrix(matrix, labels, len(values))
        if level == "patch":
            auc = np.fmin(auc, _foreground_auroc(matrix, labels, len(values)))
        blocks.append(auc)
        names += [f"{factor}={v}" for v in values]
        levels += [level] * len(values)
    auc = np.concatenate(blocks, axis=1) if blocks else np.zeros((sparse_shape(codes.tokens)[1], 0))
    return FactorMatch(auc=auc, value_names=names, level=levels)


def _foreground_auroc(matrix: sp.csc_matrix, labels: np.ndarray, n_values: int) -> np.ndarray:
    labelled = np.flatnonzero(labels >= 0)
    return auroc_matrix(sp.csc_matrix(matrix.tocsr()[labelled]), labels[labelled], n_values)
