"""Composite interpretability score and ranking of latents.

Each component is mapped to [0, 1] (1 = most interpretable) and kept as its own column:
  - c_auroc  = clip(2 · (best_auroc − 0.5), 0, 1): how well the latent detects its best ground-truth factor value;
  - c_purity = purity@k of the top images' labels (patch purity where images carry no labels);
  - c_mono   = clip(monosemanticity, 0, 1): Pach et al.'s embedding-similarity score;
  - c_sparse = clip(−log10(freq) / 2, 0, 1): 1 at ≤ 1% firing frequency, 0.5 at 10%, 0 for always-on latents.
score = mean of the available components (NaN components are skipped). Dead latents, and latents firing on
fewer than MIN_SUPPORT images (too rare to judge: purity and MS of one or two images are trivially high), get
no score and rank last. rank 1 is the best latent; ties keep feature order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORE_DEFINITION = (
    "score = mean of available components c_auroc = clip(2(best_auroc-0.5),0,1), c_purity = purity@k, "
    "c_mono = clip(monosemanticity,0,1), c_sparse = clip(-log10(freq)/2,0,1); latents firing on fewer than 5 images "
    "unscored (rank last), rank 1 = best."
)
MIN_SUPPORT = 5
COMPONENTS = ("c_auroc", "c_purity", "c_mono", "c_sparse")


def add_score_and_rank(features: pd.DataFrame) -> pd.DataFrame:
    """Adds the component columns, `score` and `rank` to a feature table with freq/best_auroc/purity/... columns."""
    out = features.copy()
    nan = pd.Series(np.nan, index=out.index)

    def column(name: str):
        """A column, or NaN everywhere where the table has none."""
        return out[name] if name in out else nan

    purity = column("purity").fillna(column("patch_purity"))
    with np.errstate(divide="ignore"):
        sparse = np.clip(-np.log10(out["freq"].to_numpy(dtype=float)) / 2, 0, 1)
    out["c_auroc"] = np.clip(2 * (column("best_auroc") - 0.5), 0, 1)
    out["c_purity"] = purity
    out["c_mono"] = np.clip(column("monosemanticity"), 0, 1)
    out["c_sparse"] = sparse
    score = out[list(COMPONENTS)].mean(axis=1, skipna=True)
    support = out["n_images_fired"] if "n_images_fired" in out else pd.Series(MIN_SUPPORT, index=out.index)
    out["score"] = score.where((out["freq"] > 0) & (support >= MIN_SUPPORT))
    key = -out["score"].fillna(-np.inf).to_numpy()
    order = np.lexsort((np.arange(len(out)), key))
    rank = np.empty(len(out), dtype=np.int64)
    rank[order] = np.arange(1, len(out) + 1)
    out["rank"] = rank
    return out
