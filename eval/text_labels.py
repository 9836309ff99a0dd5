"""Text labels for latents of CLIP models, through the model's own text tower (docs/metrics.md).

A latent's image-side direction is the activation-weighted mean of the (unit) CLIP image embeddings of the
images it fires on, activations min-max scaled as for the monosemanticity score; its label is the vocabulary
concept whose text embedding ("a photo of {concept}.") has the highest cosine with that direction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

TEMPLATE = "a photo of {}."
DEFAULT_VOCABULARY = (
    "red", "green", "blue", "yellow", "magenta", "cyan", "white", "black", "grey", "orange", "purple", "brown",
    "square", "circle", "ellipse", "heart", "triangle", "star", "line", "stripes", "gradient", "noise", "texture",
    "edge", "corner", "curve", "dot", "grid", "text", "letter", "number", "face", "eye", "person", "hand", "cat",
    "dog", "bird", "horse", "car", "bicycle", "boat", "airplane", "tree", "flower", "grass", "sky", "cloud",
    "water", "sea", "mountain", "building", "house", "window", "road", "food", "cup", "coffee", "rocket",
    "background", "shadow", "light", "dark",
)


def load_vocabulary(path: str | None, label_names: list[str] | None) -> list[str]:
    """Concepts from a text file (one per line), else the built-in list plus the source's label names."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(
                f"vocabulary file {path} does not exist; give a text file with one concept per line"
            )
        words = [w.strip() for w in file.read_text().splitlines() if w.strip()]
        if not words:
            raise ValueError(f"vocabulary file {path} is empty")
        return list(dict.fromkeys(words))
    return list(dict.fromkeys([*(label_names or []), *DEFAULT_VOCABULARY]))


@torch.no_grad()
def text_embeddings(model, concepts: list[str]) -> np.ndarray:
    emb = model.encode_text([TEMPLATE.format(c) for c in concepts]).float()
    return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


def text_labels(image_acts: sp.spmatrix, image_embeddings: np.ndarray, text_emb: np.ndarray,
                concepts: list[str]) -> tuple[list[str | None], np.ndarray]:
    """Best concept and its cosine per latent (None / NaN for latents that never fire)."""
    acts = sp.csc_matrix(image_acts, dtype=np.float64)
    high = acts.max(0).toarray().ravel()
    scaled = acts @ sp.diags(np.where(high > 0, 1.0 / np.where(high > 0, high, 1.0), 0.0))
    emb = image_embeddings / np.clip(np.linalg.norm(image_embeddings, axis=1, keepdims=True), 1e-12, None)
    direction = np.asarray(scaled.T @ emb)
    direction /= np.clip(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12, None)
    sims = direction @ text_emb.T
    best = sims.argmax(1)
    alive = high > 0
    labels = [concepts[b] if a else None for b, a in zip(best, alive)]
    return labels, np.where(alive, sims[np.arange(len(best)), best], np.nan)


def zero_shot_correct(embeddings: torch.Tensor, class_text_emb: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of images whose nearest class prompt is their label (labels -1 never count)."""
    pred = (torch.nn.functional.normalize(embeddings.float(), dim=-1) @ class_text_emb.T).argmax(-1)
    return int(((pred == labels) & (labels >= 0)).sum())
