"""torch.distributed helpers for data-parallel training and sharded sweeps (launched with torchrun)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from jaxtyping import Float, Shaped


def init_from_env(device: torch.device) -> None:
    """Join the process group torchrun describes in the environment (no-op in a plain process).

    gloo on CPU, nccl on GPU. Multi-node runs use torchrun's own rendezvous (`--rdzv-endpoint`).
    """
    if dist.is_initialized() or not _launched_as_several():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


@contextlib.contextmanager
def joined_process_group(backend: str = "gloo") -> Iterator[None]:
    """Under torchrun, be in a process group for the block, leaving it afterwards if the block joined it.

    For a job run within a larger program (a harvest) that must not leave a group behind it."""
    joined = _launched_as_several() and not dist.is_initialized()
    if joined:
        dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        if joined:
            dist.destroy_process_group()


def _launched_as_several() -> bool:
    """Whether torchrun started several processes (it sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_flat(grads: list[Tensor], weight: float, extra: Sequence[Tensor] = ()) -> None:
    """In place: each of `grads` becomes the sum over ranks of `weight * grad`, in one flat all-reduce.

    `weight` is this rank's share of the global batch, so the result equals the gradient of the loss
    averaged over the global batch even when ranks hold unequal shares. `extra` tensors are summed
    unweighted in the same collective.
    """
    tensors = [*grads, *extra]
    flat = torch.cat([g.reshape(-1) * weight for g in grads] + [t.reshape(-1).to(flat_dtype(grads)) for t in extra])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def flat_dtype(grads: list[torch.Tensor]) -> torch.dtype:
    return grads[0].dtype if grads else torch.float32


def all_reduce_sum(t: Shaped[Tensor, "*shape"]) -> Shaped[Tensor, "*shape"]:
    """In place: `t` becomes its sum over ranks."""
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_reduce_mean(t: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= world_size()
    return t


def all_gather_rows(x: Shaped[Tensor, " rank_batch *shape"], sizes: list[int]) -> Shaped[Tensor, " batch *shape"]:
    """Concatenate every rank's `[sizes[r], d]` batch in rank order (`batch` = sum(sizes)); shares may differ in size.

    The sizes are known in advance (see `share`), so no host sync is needed to pad and trim.
    """
    if not dist.is_initialized():
        return x
    padded = x.new_zeros(max(sizes), *x.shape[1:])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def all_gather_objects(obj) -> list:
    """Every rank's picklable `obj`, in rank order."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share(total: int, n_ranks: int, r: int) -> int:
    """Rank r's share of `total` items split as evenly as possible (the first `total % n_ranks` get one more)."""
    return total // n_ranks + (r < total % n_ranks)


def assign_balanced(costs: list[float], n_ranks: int) -> list[int]:
    """Owner rank of each job: largest first onto the least-loaded rank (no equal-size or divisibility rule)."""
    load = [0.0] * n_ranks
    owner = [0] * len(costs)
    for job in sorted(range(len(costs)), key=lambda j: -costs[j]):
        r = min(range(n_ranks), key=lambda i: load[i])
        owner[job] = r
        load[r] += costs[job]
    return owner
