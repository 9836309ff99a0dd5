"""Squared errors of nested (prefix) reconstructions, fused: Matryoshka's losses without [batch, groups, d] temporaries.

Given each prefix group's decoded contribution groups[:, g] and offset = b_dec - target, the error of prefix g is
offset + groups[:, 0] + ... + groups[:, g]. Autograd through a running sum, `pow` and `sum` per prefix allocates
several [batch, d] temporaries per prefix forward and backward (and slices of `groups` a whole-size zero gradient
each). Here one running [batch, d] error is updated in place (forward), and walked back by subtraction
(backward), where the gradient of group g is 2 * sum over prefixes h >= g of grad[h] * error_h.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from jaxtyping import Float


class PrefixErrors(torch.autograd.Function):
    """(squared[g] = ||offset + groups[:, :g + 1].sum(1)||^2 for every g, the last error offset + groups.sum(1))."""

    @staticmethod
    def forward(ctx, offset: Float[Tensor, "batch d"], groups: Float[Tensor, "batch groups d"]) -> tuple[
        Float[Tensor, " groups"], Float[Tensor, "batch d"]
    ]:
        error = offset.to(groups.dtype, copy=True).contiguous()
        squared = []
        for group in groups.unbind(1):
            error += group
            flat = error.view(-1)
            squared.append(flat.dot(flat))
        ctx.save_for_backward(groups, error)
        return torch.stack(squared), error

    @staticmethod
    def backward(ctx, grad_squared: Float[Tensor, " groups"], grad_error: Float[Tensor, "batch d"]) -> tuple[
        Float[Tensor, "batch d"], Float[Tensor, "batch groups d"]
    ]:
        groups, last = ctx.saved_tensors
        error = last.clone()
        acc = grad_error.to(groups.dtype, copy=True).contiguous()  # d(loss)/d(error of prefix >= g), summed
        grad_groups = torch.empty_like(groups)
        scale = (2 * grad_squared).to(groups.dtype)
        for g in reversed(range(groups.shape[1])):
            acc.addcmul_(error, scale[g])
            grad_groups[:, g] = acc
            if g:
                error -= groups[:, g]
        return acc, grad_groups


def prefix_errors(offset: Float[Tensor, "batch d"], groups: Float[Tensor, "batch groups d"]) -> tuple[
    Float[Tensor, " groups"], Float[Tensor, "batch d"]
]:
    """Squared norms [groups] of the running sums offset + groups[:, 0] + ... + groups[:, g], and the last sum;
    differentiable in offset and groups."""
    squared, last = PrefixErrors.apply(offset, groups)
    return squared, last
