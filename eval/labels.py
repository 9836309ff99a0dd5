"""Label purity@k and label entropy of each latent's top examples (docs/metrics.md)."""

from __future__ import annotations

import numpy as np

PURITY_DEFINITION = (
    "purity@k = share of a latent's top-k images carrying their majority label; label_entropy = entropy in "
    "bits of the label distribution over those images (unlabelled and padding examples ignored). Patch purity "
    "uses the top-k patches' labels, background counted as its own label (docs/metrics.md)."
)


def purity_and_entropy(top_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """top_labels [n_latents, k] int (-1 = unknown or padding) -> purity, entropy (bits), majority label.

    The majority label is -1 where there is none.
    """
    top_labels = np.asarray(top_labels)
    n_latents = top_labels.shape[0]
    purity = np.full(n_latents, np.nan)
    entropy = np.full(n_latents, np.nan)
    majority = np.full(n_latents, -1, dtype=np.int64)
    for i, row in enumerate(top_labels):
        values, counts = np.unique(row[row >= 0], return_counts=True)
        if counts.size == 0:
            continue
        p = counts / counts.sum()
        purity[i] = p.max()
        entropy[i] = float(-(p * np.log2(p)).sum()) + 0.0
        majority[i] = values[counts.argmax()]
    return purity, entropy, majority
