"""Ranking of latents: a ground-truth score where the source has ground-truth factors, a label-free score for
every source (docs/metrics.md, "Ranking").

Components, each mapped to [0, 1] (1 = most interpretable) and kept as its own column:
  - c_auroc     = clip(2 · (best_auroc − 0.5), 0, 1): how well the latent detects its best ground-truth value
                  (the strict patch AUROC where patch labels exist);
  - c_coherence = clip(moran_i, 0, 1): spatial coherence over the patch grid (0 for spatial noise);
  - c_mono      = clip((MS − MS₀) / (1 − MS₀), 0, 1): the monosemanticity score above the baseline MS₀ that a
                  latent firing equally on every image would get (the mean pairwise cosine of the reference
                  embeddings), so an encoder whose embeddings are all alike does not lift every latent;
  - c_density   = clip(−log10(freq), 0, 1): 1 at ≤ 10% firing frequency, 0.5 at 32%, 0 when always on. It
                  penalises dense latents only: rarity is no sign of meaning (too-rare latents are left out by
                  MIN_IMAGES instead), and rewarding it ranked rare conjunction latents first (docs/metrics.md).
score_label_free = mean of the available label-free components (c_coherence, c_mono, c_density).
score = c_auroc where the latent has a ground-truth AUROC, else score_label_free.
Dead latents and latents firing on fewer than MIN_IMAGES images (too rare to judge) get neither score and rank
after every scored latent. rank / rank_label_free 1 is the best; ties keep feature order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_IMAGES = 20
LABEL_FREE = ("c_coherence", "c_mono", "c_density")
SCORE_DEFINITION = (
    f"score = c_auroc = clip(2(best_auroc-0.5),0,1) where ground-truth factors exist, else score_label_free = mean "
    "of available c_coherence = clip(moran_i,0,1), c_mono = clip((MS-MS0)/(1-MS0),0,1) with MS0 the mean pairwise "
    "cosine of the reference embeddings, c_density = clip(-log10(freq),0,1); latents firing on fewer than "
    f"{MIN_IMAGES} images get no score and rank after every scored latent; rank 1 = best (docs/metrics.md)."
)


def add_score_and_rank(features: pd.DataFrame, ms_baseline: float = 0.0) -> pd.DataFrame:
    """Adds the component columns, `score`, `rank`, `score_label_free` and `rank_label_free` to a feature table
    with freq / n_images_fired / best_auroc / moran_i / monosemanticity columns (missing ones count as NaN)."""
    out = features.copy()
    nan = pd.Series(np.nan, index=out.index)

    def column(name: str):
        return out[name] if name in out else nan

    with np.errstate(divide="ignore"):
        out["c_density"] = np.clip(-np.log10(out["freq"].to_numpy(dtype=float)), 0, 1)
    out["c_auroc"] = np.clip(2 * (column("best_auroc") - 0.5), 0, 1)
    out["c_coherence"] = np.clip(column("moran_i"), 0, 1)
    out["c_mono"] = np.clip((column("monosemanticity") - ms_baseline) / max(1.0 - ms_baseline, 1e-12), 0, 1)
    support = out["n_images_fired"] if "n_images_fired" in out else pd.Series(MIN_IMAGES, index=out.index)
    judged = (out["freq"] > 0) & (support >= MIN_IMAGES)
    label_free = out[list(LABEL_FREE)].mean(axis=1, skipna=True)
    out["score_label_free"] = label_free.where(judged)
    out["score"] = out["c_auroc"].fillna(label_free).where(judged)
    out["rank"] = rank_of(out["score"].to_numpy(dtype=float))
    out["rank_label_free"] = rank_of(out["score_label_free"].to_numpy(dtype=float))
    return out


def rank_of(score: np.ndarray) -> np.ndarray:
    """1 for the highest score; NaN scores last; ties in table order."""
    order = np.lexsort((np.arange(len(score)), -np.nan_to_num(score, nan=-np.inf)))
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(1, len(score) + 1)
    return rank
