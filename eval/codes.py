"""Latent activations of every evaluation token, kept sparse, and what is read off them per latent:
top images (max over patches), top patches, activation-quantile images and patch heatmaps, and the image-level
activation scored against image-level ground truth (max over every token, CLS and registers included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import scipy.sparse as sp
import torch

from visae.activation_store.layout import TokenLayout


def sparse_shape(m: sp.spmatrix) -> tuple[int, int]:
    """(rows, columns) of a sparse matrix: scipy ships no type hints, and pyright infers its `.shape` as None."""
    return cast(tuple[int, int], m.shape)


@dataclass
class CodeCollector:
    """Streams `[images, tokens, latents]` codes in image order into sparse token- and image-level matrices.

    `layout` is the layout of the tokens the codes are for. An image's activation is its max over patch tokens
    (over all of its tokens when there are no patches, e.g. CLS-only dictionaries): what its top images and
    heatmaps show. Its activation over every token (CLS and registers too) is kept beside it, for image-level
    facts such as an object count, which a model writes into its CLS token rather than into any one patch.
    """

    n_latents: int
    layout: TokenLayout
    n_images: int = 0
    _token_parts: list = field(default_factory=list)
    _image_parts: list = field(default_factory=list)
    _all_token_parts: list = field(default_factory=list)

    @property
    def image_token_positions(self) -> list[int]:
        return list(self.layout.patch_indices) or list(range(self.layout.n_tokens))

    def update(self, z: torch.Tensor) -> None:
        """z: [images, tokens, latents] for the next images."""
        if z.shape[1:] != (self.layout.n_tokens, self.n_latents):
            raise ValueError(
                f"codes of shape {tuple(z.shape)} do not match [*, {self.layout.n_tokens}, {self.n_latents}]"
            )
        z = z.detach().float()
        b, t, _ = z.shape
        self._token_parts.append(_to_coo(z.reshape(b * t, -1), row_offset=self.n_images * t))
        image_act = z[:, self.image_token_positions].max(1).values
        self._image_parts.append(_to_coo(image_act, row_offset=self.n_images))
        if self._reads_more_than_patches:
            self._all_token_parts.append(_to_coo(z.max(1).values, row_offset=self.n_images))
        self.n_images += b

    @property
    def _reads_more_than_patches(self) -> bool:
        """Whether the max over every token can differ from the max over `image_token_positions`."""
        return len(self.image_token_positions) < self.layout.n_tokens

    def finish(self) -> Codes:
        images = _stack(self._image_parts, (self.n_images, self.n_latents))
        return Codes(
            tokens=_stack(self._token_parts, (self.n_images * self.layout.n_tokens, self.n_latents)),
            images=images,
            layout=self.layout,
            images_all_tokens=(_stack(self._all_token_parts, (self.n_images, self.n_latents))
                               if self._reads_more_than_patches else images),
        )


def _to_coo(m: torch.Tensor, row_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = torch.nonzero(m, as_tuple=True)
    return (rows + row_offset).numpy().astype(np.int64), cols.numpy().astype(np.int32), m[rows, cols].numpy()


def _stack(parts: list, shape: tuple[int, int]) -> sp.csc_matrix:
    if not parts:
        return sp.csc_matrix(shape, dtype=np.float32)
    rows, cols, vals = (np.concatenate(p) for p in zip(*parts))
    return sp.csc_matrix((vals, (rows, cols)), shape=shape)


@dataclass
class Codes:
    tokens: sp.csc_matrix  # [n_images * n_tokens, n_latents]
    images: sp.csc_matrix  # [n_images, n_latents]: max over patch tokens (all tokens when there are none)
    layout: TokenLayout
    images_all_tokens: sp.csc_matrix  # [n_images, n_latents]: max over every token (image-level ground truth)

    @property
    def n_images(self) -> int:
        return sparse_shape(self.images)[0]

    @property
    def grid(self) -> tuple[int, int]:
        return self.layout.grid if self.layout.patch_indices else (1, 1)

    def top_images(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per latent, the k images with the highest activation: indices int64 [n_latents, k] (-1 pad), acts."""
        return top_per_column(self.images, k)

    def top_patches(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per latent, the k patch tokens with the highest activation: (image, patch position in the grid, act)."""
        patch_rows = self.patch_rows()
        sub = self.tokens[patch_rows] if patch_rows.size else self.tokens
        idx, acts = top_per_column(sp.csc_matrix(sub), k)
        n_per_image = max(len(self.layout.patch_indices), 1) if patch_rows.size else self.layout.n_tokens
        image = np.where(idx >= 0, idx // n_per_image, -1)
        patch = np.where(idx >= 0, idx % n_per_image, -1)
        return image, patch, acts

    def quantile_images(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Per latent, q images spread over the quantiles (i + 0.5) / q of its nonzero image activations."""
        n_latents = sparse_shape(self.images)[1]
        images = np.full((n_latents, q), -1, dtype=np.int64)
        acts = np.zeros((n_latents, q), dtype=np.float32)
        m = self.images
        for j in range(n_latents):
            lo, hi = m.indptr[j], m.indptr[j + 1]
            if hi == lo:
                continue
            order = np.argsort(m.data[lo:hi], kind="stable")
            pick = order[np.minimum(((np.arange(q) + 0.5) / q * (hi - lo)).astype(int), hi - lo - 1)]
            images[j] = m.indices[lo:hi][pick]
            acts[j] = m.data[lo:hi][pick]
        return images, acts

    def patch_rows(self) -> np.ndarray:
        """Token-matrix rows of every patch token, image-major, patches in grid (row-major) order."""
        patches = np.asarray(self.layout.patch_indices, dtype=np.int64)
        return (np.arange(self.n_images)[:, None] * self.layout.n_tokens + patches[None, :]).ravel()

    def heatmaps(self, images: np.ndarray) -> np.ndarray:
        """float16 [n_latents, K, rows, cols]: each latent's activation over the patch grid of the images it lists."""
        n_latents, k = images.shape
        rows, cols = self.grid
        positions = np.asarray(self.layout.patch_indices or [None], dtype=object)
        out = np.zeros((n_latents, k, rows * cols), dtype=np.float32)
        if self.layout.patch_indices:
            slot = np.full(self.layout.n_tokens, -1)
            slot[list(self.layout.patch_indices)] = np.arange(len(positions))
        m = self.tokens
        for j in range(n_latents):
            lo, hi = m.indptr[j], m.indptr[j + 1]
            wanted = images[j]
            if hi == lo or not (wanted >= 0).any():
                continue
            tok_rows, vals = m.indices[lo:hi], m.data[lo:hi]
            image_of, token_of = tok_rows // self.layout.n_tokens, tok_rows % self.layout.n_tokens
            for col, image in enumerate(wanted):
                if image < 0:
                    continue
                hit = image_of == image
                if self.layout.patch_indices:
                    where = slot[token_of[hit]]
                    keep = where >= 0
                    out[j, col, where[keep]] = vals[hit][keep]
                else:
                    out[j, col, 0] = vals[hit].max(initial=0.0)
        return out.reshape(n_latents, k, rows, cols).astype(np.float16)


def top_per_column(m: sp.csc_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (-1 pad) and values of the k largest nonzero entries of every column, best first."""
    m = sp.csc_matrix(m)
    n_cols = sparse_shape(m)[1]
    col = np.repeat(np.arange(n_cols), np.diff(m.indptr))
    order = np.lexsort((m.indices, np.negative(m.data), col))
    rank = np.arange(order.size) - m.indptr[col[order]]
    keep = order[rank < k]
    idx = np.full((n_cols, k), -1, dtype=np.int64)
    vals = np.zeros((n_cols, k), dtype=np.float32)
    kept_rank = rank[rank < k]
    idx[col[keep], kept_rank] = m.indices[keep]
    vals[col[keep], kept_rank] = m.data[keep]
    return idx, vals
