"""How rich in ground-truth detectors the top of each ranking is, against the base rate among the live latents
(docs/metrics.md, "Ranking"). Needs a `best_auroc` column, so only sources with ground-truth factors get it."""

from __future__ import annotations

import numpy as np
import pandas as pd

DETECTOR_AUROC = 0.9
TOP = 50


def ranking_validation(features: pd.DataFrame, top: int = TOP) -> dict | None:
    """Share of ground-truth detectors (best_auroc >= 0.9) among the top-ranked latents of `rank` and of
    `rank_label_free`, the base rate among live latents, and the enrichment (share / base rate)."""
    if "best_auroc" not in features or not np.isfinite(features["best_auroc"].to_numpy(dtype=float)).any():
        return None
    detector = features["best_auroc"].fillna(0).to_numpy() >= DETECTOR_AUROC
    live = features["freq"].to_numpy() > 0
    base = float(detector[live].mean()) if live.any() else float("nan")
    out = {"top": top, "detector_auroc": DETECTOR_AUROC, "base_rate_live": base,
           "n_detectors": int(detector.sum()), "n_live": int(live.sum())}
    for name in ("rank", "rank_label_free"):
        if name in features:
            share = float(detector[np.argsort(features[name].to_numpy(), kind="stable")[:top]].mean())
            out[f"{name}_top_detector_share"] = share
            out[f"{name}_enrichment"] = share / base if base > 0 else None
    return out
