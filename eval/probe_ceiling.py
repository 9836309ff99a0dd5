"""The probe ceiling beside the ground-truth scores: for every factor value, the held-out AUROC of a linear probe
on the raw activations at the SAE's hook, and the coverage of the values such a probe finds (docs/metrics.md,
"Probe ceiling").

A dictionary can only be blamed for missing a value that is in the activations at all: `coverage_0_9_decodable`
is the share of the values the probe decodes (AUROC >= 0.9) that some single latent detects with AUROC >= 0.9.
The levels follow the latents' AUROC: patch level (the probe reads each patch token, strict AUROC) where the
store has patch labels for the factor and the SAE's tokens include patches; image level otherwise (the probe
reads the mean of the SAE's patch tokens beside its CLS token, as the latents are scored by their max over every
token: a count is written into the CLS token, not into any one patch). Even store images train the probes, odd
images are held out, as for the segmentation metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from visae.eval.linear_probe import probe_auroc

THRESHOLD = 0.9
PROBE_CEILING_DEFINITION = (
    "probe_auroc = held-out AUROC of a one-vs-rest logistic-regression probe on the raw activation vector at the "
    "hook (standardised, ridge 1e-4, L-BFGS; even images train, odd images held out), per factor value, at the "
    "level of the latents' AUROC (patch level strict as theirs; image level on the mean of the SAE's patch "
    "tokens concatenated with its CLS token, where it reads both). decodable = probe_auroc >= 0.9. "
    "coverage_0_9_decodable = share of the decodable values that some "
    "latent detects with AUROC >= 0.9; coverage_0_9 is the raw share of all values (docs/metrics.md)."
)


@dataclass
class ProbeData:
    """Raw activations of the probed images at the SAE's tokens, and where its patch tokens sit."""

    acts: np.ndarray  # float32 [n_images, tokens, d]
    patch_positions: list[int]  # indices of the patch tokens among `tokens`, in grid order
    cls_position: int | None = None  # index of the CLS token among `tokens`, if the SAE reads it

    @classmethod
    def read(cls, read: Callable[[int, int], np.ndarray], n_images: int, patch_positions: list[int],
             cls_position: int | None = None, batch: int = 256) -> ProbeData:
        """`read(start, stop)` returns the SAE's tokens of those store images, [b, tokens, d]."""
        parts = [np.asarray(read(s, min(s + batch, n_images)), dtype=np.float32) for s in range(0, n_images, batch)]
        return cls(np.concatenate(parts), patch_positions, cls_position)

    def rows(self, level: str) -> np.ndarray:
        """Patch level: [n_images × patches, d], image-major. Image level: the mean over patch tokens (all tokens when
        there are none), with the CLS token beside it when there are both, [n_images, d or 2d]."""
        if level == "patch":
            return self.acts[:, self.patch_positions].reshape(-1, self.acts.shape[-1])
        pooled = self.acts[:, self.patch_positions or slice(None)].mean(1)
        if self.cls_position is None or not self.patch_positions:
            return pooled
        return np.concatenate([pooled, self.acts[:, self.cls_position]], axis=1)


def probe_ceiling(data: ProbeData, factors: dict[str, np.ndarray], patch_labels: dict[str, np.ndarray],
                  factor_values: dict[str, list[str]]) -> dict[str, dict]:
    """{factor: {"level", "probe_auroc": {value: AUROC or None}}} over the probed images."""
    n_images = data.acts.shape[0]
    held_out = np.arange(n_images) % 2 == 1
    out = {}
    for factor, values in factor_values.items():
        if data.patch_positions and factor in patch_labels:
            level, labels = "patch", np.asarray(patch_labels[factor][:n_images]).reshape(n_images, -1)
        elif factor in factors:
            level, labels = "image", np.asarray(factors[factor][:n_images])[:, None]
        else:
            continue
        x, test = data.rows(level), np.repeat(held_out, labels.shape[1])
        flat = labels.reshape(-1).astype(np.int64)
        auc = probe_auroc(x[~test], flat[~test], x[test], flat[test], len(values), strict=level == "patch")
        out[factor] = {"level": level,
                       "probe_auroc": {v: (float(a) if np.isfinite(a) else None) for v, a in zip(values, auc)}}
    return out


def decodable_coverage(ceiling: dict[str, dict], latent_auroc: dict[str, dict[str, float | None]]) -> dict:
    """Coverage of the decodable values, from the probe ceiling and the best latent AUROC per value."""
    decodable = [(f, v) for f, c in ceiling.items() for v, a in c["probe_auroc"].items() if a is not None
                 and a >= THRESHOLD]
    found = [(f, v) for f, v in decodable if (latent_auroc.get(f, {}).get(v) or 0.0) >= THRESHOLD]
    n_values = sum(len(c["probe_auroc"]) for c in ceiling.values())
    return {
        "coverage_0_9_decodable": len(found) / len(decodable) if decodable else None,
        "n_values": n_values,
        "n_decodable": len(decodable),
        "n_decodable_found": len(found),
        "missed": [f"{f}={v}" for f, v in decodable if (f, v) not in found],
    }
