"""1-D logistic probes: for every (latent, class), a logistic regression of "the patch is of the class" on that
latent's activation alone, fitted by Newton's method on sparse codes (docs/metrics.md, "Segmentations").

A latent is zero on most patches, and every zero patch of a latent has the same score σ(b), so the zeros enter the
loss, gradient and Hessian as one weighted group whose size and positive count are known: each Newton iteration
costs O(nnz × classes), never O(patches × latents × classes). Latents are processed in blocks of bounded
nonzeros × classes, so memory stays O(nnz) for the codes plus O(block) for the working arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn.functional import softplus

from visae.eval.codes import sparse_shape

RIDGE = 1e-8
"""L2 penalty on the weight, (RIDGE / 2)·w² added to the mean cross-entropy (saev's ridge)."""
BLOCK_ELEMENTS = 2**21
"""Nonzero entries × classes held at once; the working set is about 8 float64 arrays of this size (128 MiB)."""


@dataclass
class Probes:
    """Fitted probes; every array is [n_latents, n_classes] except `prior_loss` [n_classes]."""

    weight: np.ndarray
    bias: np.ndarray
    loss: np.ndarray  # mean cross-entropy on the training patches (without the ridge term); NaN for unfit classes
    prior_loss: np.ndarray  # cross-entropy of the bias-only model (the class prior); NaN without positives/negatives
    converged: np.ndarray  # bool: the Newton decrement fell below the tolerance


def fit_probes(codes: sp.spmatrix, labels: np.ndarray, n_classes: int, ridge: float = RIDGE, max_iter: int = 50,
               tol: float = 1e-12, device: str = "cpu", block_elements: int = BLOCK_ELEMENTS) -> Probes:
    """Fit every (latent, class) probe on `codes` [N, n_latents] (rows: training patches) and `labels` [N] in
    0..n_classes-1. Newton's method from the prior (w = 0, b = logit of the class share), halving a step that
    raises the loss; stops at `max_iter` or when the Newton decrement is below `tol`."""
    codes = sp.csc_matrix(codes, dtype=np.float64)
    codes.sum_duplicates()
    n_rows, n_latents = sparse_shape(codes)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n_rows,) or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError(f"probe labels must be [{n_rows}] class indices in 0..{n_classes - 1}")
    positives = np.bincount(labels, minlength=n_classes).astype(np.float64)
    fit = (positives > 0) & (positives < n_rows)
    out = {name: np.zeros((n_latents, n_classes)) for name in ("weight", "bias", "loss")}
    converged = np.zeros((n_latents, n_classes), dtype=bool)
    classes = np.flatnonzero(fit)
    for start, stop in _latent_blocks(codes.indptr, max(len(classes), 1), block_elements):
        lo, hi = codes.indptr[start], codes.indptr[stop]
        per_class = max(1, block_elements // max(int(hi - lo), 1))
        entries = _Entries.of(codes, labels, start, stop, device)
        for c0 in range(0, len(classes), per_class):
            chosen = classes[c0:c0 + per_class]
            result = _newton(entries, chosen, positives, n_rows, ridge, max_iter, tol)
            for name, values in zip(("weight", "bias", "loss"), result[:3]):
                out[name][start:stop, chosen] = values
            converged[start:stop, chosen] = result[3]
    share = np.clip(positives / max(n_rows, 1), 1e-300, 1.0)
    prior = -(share * np.log(share) + (1 - share) * np.log(np.clip(1 - share, 1e-300, 1.0)))
    out["loss"][:, ~fit] = np.nan
    return Probes(out["weight"], out["bias"], out["loss"], np.where(fit, prior, np.nan), converged)


def _latent_blocks(indptr: np.ndarray, n_classes: int, block_elements: int) -> list[tuple[int, int]]:
    """Consecutive latent ranges whose nonzeros × classes stay within `block_elements` (one latent at least)."""
    blocks, start, n_latents = [], 0, len(indptr) - 1
    while start < n_latents:
        limit = indptr[start] + max(block_elements // n_classes, 1)
        stop = max(int(np.searchsorted(indptr, limit, side="right")) - 1, start + 1)
        blocks.append((start, min(stop, n_latents)))
        start = min(stop, n_latents)
    return blocks


@dataclass
class _Entries:
    """The nonzero codes of a block of latents, on the compute device."""

    value: torch.Tensor  # [E] float64
    latent: torch.Tensor  # [E] int64, 0-based within the block
    label: torch.Tensor  # [E] int64
    n_latents: int

    @classmethod
    def of(cls, codes: sp.csc_matrix, labels: np.ndarray, start: int, stop: int, device: str) -> _Entries:
        lo, hi = codes.indptr[start], codes.indptr[stop]
        latent = np.repeat(np.arange(stop - start), np.diff(codes.indptr[start:stop + 1]))
        return cls(torch.as_tensor(codes.data[lo:hi], device=device), torch.as_tensor(latent, device=device),
                   torch.as_tensor(labels[codes.indices[lo:hi]], device=device), stop - start)

    def per_latent(self, values: torch.Tensor) -> torch.Tensor:
        """Sum [E, C] entry values into [n_latents, C]."""
        out = torch.zeros(self.n_latents, values.shape[1], dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.latent, values)

    def subset(self, latents: torch.Tensor) -> _Entries:
        """The entries of these latents only, renumbered 0..len(latents)-1 in the given order."""
        position = torch.full((self.n_latents,), -1, dtype=torch.int64, device=latents.device)
        position[latents] = torch.arange(len(latents), device=latents.device)
        new = position[self.latent]
        keep = new >= 0
        return _Entries(self.value[keep], new[keep], self.label[keep], len(latents))


def _newton(entries: _Entries, classes: np.ndarray, positives: np.ndarray, n_rows: int, ridge: float,
            max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(weight, bias, loss, converged) [block latents, len(classes)] for the probes of these classes.

    Latents whose probes have all converged drop out of the iterations (the entries are compacted whenever half of
    the remaining latents are done), so a few slow, nearly separable probes do not keep the whole block busy."""
    dev, f64 = entries.value.device, torch.float64
    hit = (entries.label[:, None] == torch.as_tensor(classes, device=dev)[None, :]).to(f64)  # [E, C] y on nonzeros
    n_zero = (n_rows - torch.bincount(entries.latent, minlength=entries.n_latents).to(f64))[:, None]
    y_sum = torch.as_tensor(positives[classes], device=dev)[None, :].expand(entries.n_latents, -1)
    ya_sum = entries.per_latent(hit * entries.value[:, None])
    del hit
    share = torch.as_tensor(positives[classes] / n_rows, device=dev)
    bias = torch.log(share / (1 - share)).expand(entries.n_latents, -1).clone()
    weight = torch.zeros_like(bias)
    # the last accepted point and its penalised loss, the pending step, and whether each probe has converged
    best_w, best_b, best_loss = weight.clone(), bias.clone(), torch.full_like(bias, torch.inf)
    step_w, step_b = torch.zeros_like(bias), torch.zeros_like(bias)
    done = torch.zeros_like(bias, dtype=torch.bool)
    rows, sub = torch.arange(entries.n_latents, device=dev), entries
    for _ in range(max_iter):
        w, b, a = weight[rows], bias[rows], sub.value[:, None]
        s = w[sub.latent] * a + b[sub.latent]
        penalised = _mean_loss(sub, s, b, w, n_zero[rows], ya_sum[rows], y_sum[rows], n_rows) + ridge / 2 * w**2
        # a step that raised the loss is halved from the last accepted point; the others move on by Newton
        accept = ~done[rows] & (penalised <= best_loss[rows] * (1 + 1e-12))
        best_w[rows] = torch.where(accept, w, best_w[rows])
        best_b[rows] = torch.where(accept, b, best_b[rows])
        best_loss[rows] = torch.where(accept, penalised, best_loss[rows])
        p, p0 = torch.sigmoid(s), torch.sigmoid(b)
        h, h0 = p * (1 - p), p0 * (1 - p0)
        g_b = (sub.per_latent(p) + n_zero[rows] * p0 - y_sum[rows]) / n_rows
        g_w = (sub.per_latent(p * a) - ya_sum[rows]) / n_rows + ridge * w
        h_bb = (sub.per_latent(h) + n_zero[rows] * h0) / n_rows
        h_bw = sub.per_latent(h * a) / n_rows
        h_ww = sub.per_latent(h * a * a) / n_rows + ridge
        det = torch.clamp(h_bb * h_ww - h_bw**2, min=1e-300)
        d_b, d_w = (h_ww * g_b - h_bw * g_w) / det, (h_bb * g_w - h_bw * g_b) / det
        now_done = done[rows] | (accept & (g_b * d_b + g_w * d_w < 2 * tol))
        step_w[rows] = torch.where(accept, -d_w, step_w[rows] / 2)
        step_b[rows] = torch.where(accept, -d_b, step_b[rows] / 2)
        tiny = (step_w[rows].abs() + step_b[rows].abs()) < 1e-15 * (1 + best_w[rows].abs() + best_b[rows].abs())
        done[rows] = now_done | tiny
        weight[rows], bias[rows] = best_w[rows] + step_w[rows], best_b[rows] + step_b[rows]
        live = ~done[rows].all(1)
        if not bool(live.any()):
            break
        if int(live.sum()) <= len(rows) // 2:
            rows = rows[live]
            sub = entries.subset(rows)
    s = best_w[entries.latent] * entries.value[:, None] + best_b[entries.latent]
    loss = _mean_loss(entries, s, best_b, best_w, n_zero, ya_sum, y_sum, n_rows)
    return best_w.cpu().numpy(), best_b.cpu().numpy(), loss.cpu().numpy(), done.cpu().numpy()


def _mean_loss(entries: _Entries, s: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, n_zero: torch.Tensor,
               ya_sum: torch.Tensor, y_sum: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean cross-entropy [latents, C]: the nonzero entries' scores `s` [E, C], and the zeros as one group."""
    total = entries.per_latent(softplus(s)) + n_zero * softplus(bias) - weight * ya_sum - bias * y_sum
    return total / n_rows
