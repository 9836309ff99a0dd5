"""Typed read access to what `visae eval` writes under SAE_DIR/eval/ (the layout in docs/dictionary-formats.md).

This is the only reader the web service uses, so its API is kept stable:

    res = EvalResults.load("path/to/sae")
    res.summary["fvu"], res.n_features
    res.features                       # pandas DataFrame, one row per latent, indexed 0..d_sae-1
    res.ranked(by="score", descending=True, limit=50, offset=0)   # list[dict] rows
    res.feature(17)                    # FeatureView: row + top/quantile images, acts and heatmaps
    res.thumb_path(image_index), res.report_path
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

EVAL_DIRNAME = "eval"
SUMMARY_FILE = "summary.json"
FEATURES_FILE = "features.parquet"
TOP_FILE = "top.safetensors"
THUMBS_DIR = "thumbs"
REPORT_FILE = "report.html"
TOP_KEYS = ("top_images", "top_acts", "top_heatmaps", "quantile_images", "quantile_acts", "quantile_heatmaps")
PATCH_KEYS = ("top_patch_images", "top_patch_positions", "top_patch_acts")  # extra keys, beyond the contract


@dataclass(frozen=True)
class FeatureView:
    """Everything known about one latent. Image indices are store image indices; -1 pads."""

    feature: int
    row: dict
    top_images: np.ndarray  # int64 [K]
    top_acts: np.ndarray  # float32 [K]
    top_heatmaps: np.ndarray  # float16 [K, rows, cols]
    quantile_images: np.ndarray  # int64 [Q]
    quantile_acts: np.ndarray  # float32 [Q]
    quantile_heatmaps: np.ndarray  # float16 [Q, rows, cols]
    top_patch_images: np.ndarray | None = None  # int64 [K] image of each top patch (-1 pad)
    top_patch_positions: np.ndarray | None = None  # int64 [K] row-major position of the patch in the grid
    top_patch_acts: np.ndarray | None = None  # float32 [K]

    def examples(self, which: str = "top") -> list[tuple[int, float, np.ndarray]]:
        """(image_index, activation, heatmap) for the non-padding top or quantile examples."""
        images, acts, maps = (
            (self.top_images, self.top_acts, self.top_heatmaps)
            if which == "top"
            else (self.quantile_images, self.quantile_acts, self.quantile_heatmaps)
        )
        return [(int(i), float(a), m) for i, a, m in zip(images, acts, maps) if i >= 0]


@dataclass(frozen=True)
class EvalResults:
    root: Path
    summary: dict
    features: pd.DataFrame
    top: dict[str, np.ndarray]

    @classmethod
    def load(cls, sae_dir: str | Path) -> EvalResults:
        root = Path(sae_dir) / EVAL_DIRNAME
        missing = [n for n in (SUMMARY_FILE, FEATURES_FILE, TOP_FILE) if not (root / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"no complete evaluation in {root} (missing {', '.join(missing)}); "
                f"run `visae eval {sae_dir} --store STORE`"
            )
        with _readable(root / SUMMARY_FILE, sae_dir):
            summary = json.loads((root / SUMMARY_FILE).read_text())
        with _readable(root / FEATURES_FILE, sae_dir):
            features = pd.read_parquet(root / FEATURES_FILE).set_index("feature", drop=False).sort_index()
        features.index.name = None
        with _readable(root / TOP_FILE, sae_dir):
            top = load_file(str(root / TOP_FILE))
        return cls(root=root, summary=summary, features=features, top=top)

    @staticmethod
    def exists(sae_dir: str | Path) -> bool:
        root = Path(sae_dir) / EVAL_DIRNAME
        return all((root / n).is_file() for n in (SUMMARY_FILE, FEATURES_FILE, TOP_FILE))

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def columns(self) -> list[str]:
        return list(self.features.columns)

    @property
    def report_path(self) -> Path:
        return self.root / REPORT_FILE

    def thumb_path(self, image_index: int) -> Path:
        return self.root / THUMBS_DIR / f"{int(image_index)}.png"

    def ranked(
        self, by: str = "score", descending: bool = True, limit: int | None = None, offset: int = 0
    ) -> list[dict]:
        """Feature rows sorted by any column (NaN last), as plain JSON-ready dicts."""
        if by not in self.features.columns:
            raise ValueError(f"unknown column {by!r}; sortable columns: {', '.join(self.features.columns)}")
        table = self.features.sort_values(by, ascending=not descending, na_position="last", kind="stable")
        stop = None if limit is None else offset + limit
        return [_json_row(r) for r in table.iloc[offset:stop].to_dict("records")]

    def feature(self, index: int) -> FeatureView:
        if not 0 <= index < self.n_features:
            raise ValueError(f"feature {index} out of range; this dictionary has {self.n_features} latents")
        return FeatureView(
            feature=index,
            row=_json_row(self.features.iloc[index].to_dict()),
            **{key: self.top[key][index] for key in TOP_KEYS + PATCH_KEYS if key in self.top},
        )


def _json_row(row: dict) -> dict:
    """NaN becomes None and numpy scalars become Python ones, so rows serialise as JSON."""
    out = {}
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[key] = value
    return out


@contextmanager
def _readable(path: Path, sae_dir: str | Path) -> Iterator[None]:
    """A damaged or foreign results file (truncated, a pickle renamed .safetensors, ...) as one line with the fix;
    nothing in it is executed: JSON, Parquet and safetensors readers only parse."""
    try:
        yield
    except Exception as err:  # each reader has its own error types (JSONDecodeError, ArrowInvalid, SafetensorError)
        raise ValueError(f"{path} is damaged or not written by visae eval ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); rerun `visae eval {sae_dir} "
                         "--store STORE` to rewrite it") from None
