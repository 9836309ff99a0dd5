"""Writing the eval-results layout (docs/dictionary-formats.md) atomically, and the summary into the SAE's
cfg.json metadata."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from safetensors.numpy import save

from visae.core.atomic import atomic_folder, write_atomic
from visae.eval.results import EVAL_DIRNAME, FEATURES_FILE, REPORT_FILE, SUMMARY_FILE, THUMBS_DIR, TOP_FILE

THUMB_MAX_SIDE = 160
# Summary figures copied into cfg.json metadata (under "eval", plus the three the Hub card tabulates at top level).
METADATA_KEYS = ("fvu", "explained_variance", "mse", "cosine", "rel_bias", "l0", "dead_fraction", "n_tokens",
                 "dense_10", "dense_1", "coverage_0_9", "store", "store_fingerprint", "hook", "token_kind",
                 "kind", "out_hook", "hooks", "per_hook", "hook_profile", "metric_definitions")


def json_ready(value: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None (strict JSON); a dict gives a dict."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(sae_dir: Path, summary: dict, features: pd.DataFrame, top: dict[str, np.ndarray],
                  thumbs: dict[int, Image.Image], report: Callable[[Path], str]) -> Path:
    """Write everything into a temporary sibling folder, then swap it in for SAE_DIR/eval in one rename.

    `report(tmp_dir)` builds the HTML once the other files are in place."""
    final = Path(sae_dir) / EVAL_DIRNAME
    with atomic_folder(final) as tmp:
        (tmp / SUMMARY_FILE).write_text(json.dumps(json_ready(summary), indent=2))
        features.to_parquet(tmp / FEATURES_FILE, index=False)
        (tmp / TOP_FILE).write_bytes(save({k: np.ascontiguousarray(v) for k, v in top.items()}))
        (tmp / THUMBS_DIR).mkdir()
        for index, image in thumbs.items():
            image.save(tmp / THUMBS_DIR / f"{index}.png")
        (tmp / REPORT_FILE).write_text(report(tmp), encoding="utf-8")
    return final


def thumbnail(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    if max(image.size) > THUMB_MAX_SIDE:
        scale = THUMB_MAX_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return image


def update_cfg_metadata(sae_dir: Path, summary: dict) -> None:
    """Put the summary figures into cfg.json metadata (written atomically) so publishing picks them up."""
    path = Path(sae_dir) / "cfg.json"
    cfg = json.loads(path.read_text())
    figures = json_ready({k: summary[k] for k in METADATA_KEYS if k in summary})
    downstream = summary.get("downstream", {}).get("mean_over_heads", {})
    figures["downstream"] = json_ready(downstream)
    if "downstream_per_hook" in summary:
        figures["downstream_per_hook"] = json_ready({hook: down.get("mean_over_heads", {})
                                                     for hook, down in summary["downstream_per_hook"].items()})
    metadata = cfg.setdefault("metadata", {})
    metadata["eval"] = figures
    metadata.update({k: figures.get(k) for k in ("fvu", "l0", "dead_fraction")})
    metadata["eval_summary"] = {"fvu": figures.get("fvu"), "l0": figures.get("l0"), "mse": figures.get("mse"),
                                "dead_fraction": figures.get("dead_fraction"),
                                "dense_fraction_10": figures.get("dense_10"),
                                "n_eval_tokens": figures.get("n_tokens")}
    if "per_hook" in figures:  # as training records a crosscoder's closing evaluation
        metadata["eval_summary"]["per_hook"] = {hook: {k: one.get(k) for k in ("fvu", "mse")}
                                                for hook, one in figures["per_hook"].items()}
    write_atomic(path, json.dumps(cfg, indent=2))
