"""The dictionaries a service instance serves: an SAE, its evaluation results, and cached views of both.

Everything here reads precomputed results (`eval.results.EvalResults`) and the SAE weights (safetensors);
nothing heavy is recomputed per request, and derived views are memoised. A dictionary without eval results (say,
fresh from the Hub) is still served: its features are listed by index with the firing frequency of its
sparsity.safetensors, with similar features, neurons and encoding, but no example images until `visae eval`."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file

from visae.eval.results import EvalResults
from visae.sae import SAE
from visae.sae.crosscoder import PROFILE_FILE
from visae.service.multi_hook import Hooks, decoder_norms_by_hook, hook_profile, transcoder_sides

DICTIONARY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LABEL_COLUMNS = ("text_label", "best_factor", "top_label", "patch_top_label")
SUMMARY_FIGURES = ("fvu", "mse", "cosine", "l0", "dead_fraction", "dense_10", "dense_1", "coverage_0_9", "n_tokens")
MAX_LABELS = 500
# An absolute path's folders (`/srv/data/` of `/srv/data/store.zarr`, also after `spec:`): never shown to clients.
_ABSOLUTE_FOLDERS = re.compile(r"(?<![\w/])/(?:[^\s,;=()'\"/]+/)*(?=[^\s,;=()'\"/])")


def hide_paths(text: str | None) -> str | None:
    """`text` (a model spec, an image source) with the folders of every absolute path left out."""
    return _ABSOLUTE_FOLDERS.sub("", text) if text else text


def store_name(location: str | None) -> str | None:
    """What clients are shown of a store: the last part of its path or URL (the store folder's name), never the
    server's path; the label of a store harvested for one evaluation ("IMAGES through MODEL ...") without paths."""
    if not location or any(c.isspace() for c in location):
        return hide_paths(location)
    return location.rstrip("/").rsplit("/", 1)[-1] or location


def slug(text: str) -> str:
    """A dictionary id made from a folder name: URL-safe, never a path."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "dictionary"
    return cleaned[:128]


@dataclass(eq=False)  # identity hashing: the lru_caches below key on the instance
class Dictionary:
    """One served SAE with its evaluation results."""

    id: str
    path: Path
    sae: SAE
    results: EvalResults
    cfg: dict
    weights: str | None = None  # local model weights file, for models not loadable from their spec alone
    device: str = "cpu"  # where the model runs when an image is encoded (the SAE itself stays on the CPU)
    evaluated: bool = True  # False: `results` holds only cfg.json figures and sparsity frequencies

    @classmethod
    def load(cls, dictionary_id: str, path: Path, weights: str | None = None, device: str = "cpu") -> Dictionary:
        cfg = json.loads((path / "cfg.json").read_text())
        sae = SAE.load(path).eval()
        evaluated = EvalResults.exists(path)
        results = EvalResults.load(path) if evaluated else _weights_only_results(path, cfg, sae)
        if results.n_features != sae.cfg.d_sae:  # eval results from an older dictionary in the same folder
            raise ValueError(
                f"{path}: eval results describe {results.n_features} latents but the SAE has {sae.cfg.d_sae}; "
                f"re-run `visae eval {path} --store STORE`"
            )
        return cls(id=dictionary_id, path=path, sae=sae, results=results, cfg=cfg, weights=weights,
                   device=device, evaluated=evaluated)

    # -- summary -------------------------------------------------------------------------------------------
    def _meta(self, key: str, *cfg_keys: str) -> str | None:
        summary = self.results.summary
        if summary.get(key) is not None:
            return summary[key]
        metadata = self.cfg.get("metadata", {}) or {}
        return next((metadata[k] for k in cfg_keys if metadata.get(k) is not None), None)

    @property
    def model(self) -> str | None:
        return self._meta("model", "model_name")

    @property
    def store_name(self) -> str | None:
        """The store the dictionary was evaluated on, by name: never the server's path to it."""
        store = self.results.summary.get("store")
        return store_name(store) if isinstance(store, str) else None

    @property
    def hook(self) -> str | None:
        return self._meta("hook", "hook_name")

    @property
    def token_kind(self) -> str:
        return self._meta("token_kind", "token_kind") or "all"

    @property
    def default_sort(self) -> str:
        return "rank" if "rank" in self.results.features.columns else "feature"

    @property
    def n_features(self) -> int:
        return self.results.n_features

    @cached_property
    def hooks(self) -> Hooks:
        return Hooks.of(self.cfg, self.sae, self.hook)

    @cached_property
    def refused(self) -> dict[str, str]:
        """Operations that do not apply to this dictionary (a transcoder's interventions, ...), each with why."""
        models = (self.cfg.get("metadata") or {}).get("model_names") or [self.model]
        return self.hooks.refused([hide_paths(m) or "" for m in models])

    @property
    def is_mlp_hidden(self) -> bool:
        """Whether the decoder writes one `mlp_hidden` hook, whose neuron basis is privileged."""
        return [hook.endswith("mlp_hidden") for hook in self.hooks.written] == [True]

    def summary(self) -> dict:
        figures = {k: self.results.summary.get(k) for k in SUMMARY_FIGURES}
        return {
            "id": self.id,
            "name": self.path.name,
            "model": hide_paths(self.model),
            "hook": self.hook,
            "token_kind": self.token_kind,
            "architecture": self.cfg.get("architecture"),
            "d_in": self.cfg.get("d_in"),
            "d_sae": self.n_features,
            "k": self.cfg.get("k"),
            "evaluated": self.evaluated,
            **self.hooks.summary(),
            "refused": self.refused,
            **figures,
            "links": {"page": f"/d/{self.id}", "json": f"/api/dictionaries/{self.id}"},
        }

    def details(self) -> dict:
        return {
            **self.summary(),
            "freq_hist": self.results.summary.get("freq_hist"),
            "downstream": self.results.summary.get("downstream"),
            "metric_definitions": self.results.summary.get("metric_definitions"),
            "store": self.store_name,
            "sort_columns": self.sort_columns,
            "default_sort": self.default_sort,
            "labels": self.labels,
            "per_hook": self._multi_hook_figure("per_hook"),
            "hook_profile": self._multi_hook_figure("hook_profile"),
        }

    def _multi_hook_figure(self, key: str) -> dict | None:
        """A crosscoder's figures by hook (`per_hook`, `hook_profile`): `visae eval`'s, else those of the closing
        evaluation of training in the metadata."""
        metadata = self.cfg.get("metadata") or {}
        return self.results.summary.get(key) or metadata.get(key) or (metadata.get("eval_summary") or {}).get(key)

    # -- feature browser -----------------------------------------------------------------------------------
    @cached_property
    def sort_columns(self) -> list[str]:
        frame = self.results.features
        return [c for c in frame.columns if frame[c].dtype.kind in "iuf"]

    @cached_property
    def _label_text(self) -> list[str]:
        """Per feature, its labels joined, lower-cased, for text search."""
        frame = self.results.features
        columns = [c for c in LABEL_COLUMNS if c in frame.columns]
        return [" | ".join(str(v) for v in vals if _present(v)).lower()
                for vals in zip(*(frame[c].tolist() for c in columns))] if columns else [""] * len(frame)

    @cached_property
    def labels(self) -> list[str]:
        """Distinct label values (most common first) for the label filter."""
        frame = self.results.features
        counts: dict[str, int] = {}
        for column in (c for c in LABEL_COLUMNS if c in frame.columns):
            for value in frame[column].tolist():
                if _present(value):
                    counts[str(value)] = counts.get(str(value), 0) + 1
        return sorted(counts, key=lambda v: (-counts[v], v))[:MAX_LABELS]

    @cached_property
    def _label_sets(self) -> list[frozenset[str]]:
        frame = self.results.features
        columns = [c for c in LABEL_COLUMNS if c in frame.columns]
        rows = zip(*(frame[c].tolist() for c in columns)) if columns else ([] for _ in range(len(frame)))
        return [frozenset(str(v) for v in vals if _present(v)) for vals in rows]

    @lru_cache(maxsize=64)
    def _order(self, sort: str, descending: bool) -> tuple[int, ...]:
        frame = self.results.features
        ordered = frame.sort_values(sort, ascending=not descending, na_position="last", kind="stable")
        return tuple(int(i) for i in ordered.index)

    def browse(self, sort: str, descending: bool, label: str | None, query: str | None,
               offset: int, limit: int) -> dict:
        if sort not in self.sort_columns:
            raise ValueError(f"cannot sort by {sort!r}; choose one of: {', '.join(self.sort_columns)}")
        order = self._order(sort, descending)
        if label:
            order = tuple(i for i in order if label in self._label_sets[i])
        if query:
            needle = query.lower()
            order = tuple(i for i in order if needle in self._label_text[i])
        page = order[offset:offset + limit]
        return {
            "dictionary": self.id,
            "sort": sort,
            "order": "desc" if descending else "asc",
            "label": label,
            "q": query,
            "total": len(order),
            "offset": offset,
            "limit": limit,
            "features": [self.feature_row(i) for i in page],
        }

    @lru_cache(maxsize=65536)
    def feature_row(self, feature: int) -> dict:
        view = self.results.feature(feature)
        first = next((i for i in view.top_images.tolist() if i >= 0), None)
        return {**view.row, "feature": feature, "page": f"/d/{self.id}/features/{feature}",
                "preview": None if first is None else f"/api/dictionaries/{self.id}/features/{feature}/top/0.png"}

    # -- one feature -----------------------------------------------------------------------------------------
    def check_feature(self, feature: int) -> None:
        if not 0 <= feature < self.n_features:
            raise IndexError(f"feature {feature} does not exist; {self.id} has features 0..{self.n_features - 1}")

    @lru_cache(maxsize=4096)
    def feature_detail(self, feature: int) -> dict:
        self.check_feature(feature)
        view = self.results.feature(feature)
        hist = self.results.summary.get("freq_hist")
        return {
            "dictionary": self.id,
            "feature": feature,
            "evaluated": self.evaluated,
            "scores": view.row,
            "labels": {c: view.row.get(c) for c in LABEL_COLUMNS if c in view.row},
            "top": self._examples(view, "top"),
            "quantiles": self._examples(view, "quantile"),
            "frequency": {"freq": view.row.get("freq"), "log10_freq": view.row.get("log10_freq"),
                          "histogram": hist},
            "similar": self.similar(feature),
            "top_neurons": self.top_neurons(feature) if self.is_mlp_hidden else None,
            "sides": self._sides(feature) if self.hooks.kind == "transcoder" else None,
            "hook_profile": (hook_profile(self.hooks.read, self.hook_norms[feature])
                             if self.hooks.kind == "crosscoder" else None),
            "links": {"page": f"/d/{self.id}/features/{feature}",
                      "json": f"/api/dictionaries/{self.id}/features/{feature}"},
        }

    def _sides(self, feature: int) -> dict:
        """A transcoder latent's input side (with the latents reading alike) and output side (with those writing
        alike, the output hook's FVU, and the neurons written for an `mlp_hidden` output)."""
        mean_act = self.results.feature(feature).row.get("mean_act")
        sides = transcoder_sides(self.hooks, self.cfg, self.decoder_norms, feature, mean_act)
        sides["input"]["similar"] = self.similar(feature, by="encoder")
        sides["output"] |= {"fvu": self.results.summary.get("fvu"), "similar": self.similar(feature),
                            "top_neurons": self.top_neurons(feature) if self.is_mlp_hidden else None}
        return sides

    def _examples(self, view, which: str) -> list[dict]:
        images = view.top_images if which == "top" else view.quantile_images
        acts = view.top_acts if which == "top" else view.quantile_acts
        return [{"slot": slot, "image": int(image), "activation": float(act),
                 "heatmap_png": f"/api/dictionaries/{self.id}/features/{view.feature}/{which}/{slot}.png",
                 "image_png": f"/api/dictionaries/{self.id}/images/{int(image)}.png"}
                for slot, (image, act) in enumerate(zip(images.tolist(), acts.tolist())) if image >= 0]

    def example(self, feature: int, which: str, slot: int) -> tuple[int, np.ndarray, float]:
        """(image index, heatmap, colour scale) of one top/quantile example."""
        self.check_feature(feature)
        view = self.results.feature(feature)
        examples = view.examples(which)
        if not 0 <= slot < len(examples):
            raise IndexError(f"feature {feature} has {len(examples)} {which} examples; slot {slot} does not exist")
        image, _, heat = examples[slot]
        scale = float(view.top_acts.max()) if (view.top_images >= 0).any() else 0.0
        return image, np.asarray(heat, dtype=np.float32), max(scale, float(np.max(heat)), 1e-12)

    @cached_property
    def _unit_decoder(self) -> torch.Tensor:
        return _unit_rows(self.sae.W_dec)

    @cached_property
    def _unit_encoder(self) -> torch.Tensor:
        return _unit_rows(self.sae.W_enc.T)

    @cached_property
    def decoder_norms(self) -> np.ndarray:
        """Each latent's decoder row norm (raw units of the hooks written)."""
        with torch.no_grad():
            return self.sae.W_dec.detach().double().norm(dim=1).numpy()

    @cached_property
    def hook_norms(self) -> np.ndarray:
        """A crosscoder's decoder norm of each latent at each hook [d_sae, n_hooks] (`multi_hook.hook_profile`)."""
        return decoder_norms_by_hook(self._inside(self.path / PROFILE_FILE), self.sae)

    def similar(self, feature: int, n: int = 12, by: Literal["decoder", "encoder"] = "decoder") -> list[dict]:
        """The features whose decoder (or encoder: `by`) directions are closest to this one's (cosine)."""
        unit = self._unit_encoder if by == "encoder" else self._unit_decoder
        with torch.no_grad():
            cosine = unit @ unit[feature]
            cosine[feature] = -2.0
            values, indices = cosine.topk(min(n, self.n_features - 1))
        return [{"feature": int(i), "cosine": round(float(v), 4), "label": self.short_label(int(i)),
                 "page": f"/d/{self.id}/features/{int(i)}"} for v, i in zip(values, indices)]

    def top_neurons(self, feature: int, n: int = 12) -> list[dict]:
        """For mlp_hidden dictionaries: the MLP neurons this feature's decoder row writes to most."""
        with torch.no_grad():
            row = self.sae.W_dec[feature].detach().float()
            values, indices = row.abs().topk(min(n, row.numel()))
        return [{"neuron": int(i), "weight": round(float(row[i]), 5)} for i in indices]

    def short_label(self, feature: int) -> str | None:
        row = self.results.features.iloc[feature]
        return next((str(row[c]) for c in LABEL_COLUMNS if c in row.index and _present(row[c])), None)

    # -- images ----------------------------------------------------------------------------------------------
    @cached_property
    def image_indices(self) -> tuple[int, ...]:
        """Store images that have an evaluation thumbnail (those referenced by top/quantile examples), a regular
        file inside the dictionary folder."""
        top = self.results.top
        referenced = np.unique(np.concatenate([top["top_images"].ravel(), top["quantile_images"].ravel()]))
        return tuple(int(i) for i in referenced if i >= 0 and self._inside(self.results.thumb_path(int(i))))

    @cached_property
    def _real_folder(self) -> Path:
        return self.path.resolve()

    def _inside(self, path: Path) -> Path | None:
        """`path` with every symlink resolved, if that is a regular file inside the dictionary folder; else None."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        return real if real.is_relative_to(self._real_folder) and real.is_file() else None

    def thumb_path(self, image: int) -> Path:
        """The real path of an image's thumbnail: checked on every call, so a thumbnail replaced by a symlink out of
        the folder (say, to /etc/passwd) after the service started is refused too."""
        if image not in set(self.image_indices):
            raise IndexError(f"image {image} has no thumbnail in {self.id}; list them at "
                             f"/api/dictionaries/{self.id}/images")
        real = self._inside(self.results.thumb_path(image))
        if real is None:
            raise IndexError(f"image {image}'s thumbnail in {self.id} is not a regular file inside the dictionary "
                             "folder; it is not served")
        return real

    def read_thumb(self, image: int) -> bytes:
        """The bytes of an image's thumbnail (see `thumb_path`), opened without following a symlink."""
        real = self.thumb_path(image)
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            raise IndexError(f"image {image}'s thumbnail in {self.id} cannot be read") from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise IndexError(f"image {image}'s thumbnail in {self.id} is not a regular file; it is not served")
            return file.read()


def _unit_rows(weights: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        rows = weights.detach().float()
        return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _weights_only_results(path: Path, cfg: dict, sae: SAE) -> EvalResults:
    """What is known of a dictionary that has not been evaluated: cfg.json figures and, where the folder has
    sparsity.safetensors (log10 firing frequency), each latent's frequency. No example images."""
    meta = cfg.get("metadata") or {}
    d_sae = sae.cfg.d_sae
    columns: dict[str, np.ndarray] = {"feature": np.arange(d_sae)}
    if (path / "sparsity.safetensors").is_file():
        log10_freq = load_file(str(path / "sparsity.safetensors"))["sparsity"].astype(np.float64).reshape(d_sae)
        columns.update(freq=np.power(10.0, log10_freq), log10_freq=log10_freq)
    summary = {"model": meta.get("model_name"), "hook": meta.get("hook_name"), "token_kind": meta.get("token_kind"),
               **{key: meta.get(key) for key in ("fvu", "l0", "dead_fraction")}}
    empty = {"images": np.zeros((d_sae, 0), np.int64), "acts": np.zeros((d_sae, 0), np.float32),
             "heatmaps": np.zeros((d_sae, 0, 0, 0), np.float16)}
    top = {f"{which}_{kind}": array for which in ("top", "quantile") for kind, array in empty.items()}
    return EvalResults(root=path / "eval", summary=summary, features=pd.DataFrame(columns), top=top)


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and np.isnan(value):
        return False
    return str(value) not in ("", "-1", "None", "nan")


class Catalog:
    """Dictionaries by id. Ids are matched against a fixed set, never used as paths."""

    def __init__(self, dictionaries: list[Dictionary]):
        if not dictionaries:
            raise ValueError("no dictionaries to serve; pass SAE folders (with cfg.json)")
        self._by_id = {d.id: d for d in dictionaries}

    @classmethod
    def load(cls, located: list[tuple[str, Path]], weights: str | None = None, device: str = "cpu") -> Catalog:
        """Load (name, folder) pairs; names become unique URL-safe ids. `weights` is a local model weights file
        used for encoding (as `visae harvest --weights` took it), `device` the torch device the model runs on."""
        dictionaries, used = [], set()
        for name, path in located:
            base = slug(name)
            dictionary_id, n = base, 2
            while dictionary_id in used:
                dictionary_id, n = f"{base}-{n}", n + 1
            used.add(dictionary_id)
            dictionaries.append(Dictionary.load(dictionary_id, path, weights, device))
        return cls(dictionaries)

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, dictionary_id: str) -> Dictionary:
        if not DICTIONARY_ID.match(dictionary_id) or dictionary_id not in self._by_id:
            raise KeyError(f"no dictionary {dictionary_id!r}; served: {', '.join(self._by_id)}")
        return self._by_id[dictionary_id]
