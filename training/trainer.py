"""One SAE under training: its optimizer, LR schedule, dead-latent tracker and metric window.

Both a single run (`training.run`) and a sweep (`training.sweep`, many of these on one batch
stream) drive SAEs through this class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from visae.core import distributed
from visae.core.reconstruction import ReconstructionStats
from visae.sae import SAE, TrainState
from visae.training.dead_latents import DeadLatentTracker
from visae.training.metrics import StepMetrics, batch_fvu_parts
from visae.training.schedule import WarmupDecay, lr_scheduler, sparsity_scale

if TYPE_CHECKING:
    from jaxtyping import Bool, Float


class NonFiniteTraining(ValueError):
    """A loss, gradient or weight became NaN or infinite: training stops instead of spending its budget on NaN."""


def nonfinite_message(step: int, first: int, store: str, hook: str | None, lr: float | None, kept: str,
                      name: str = "", resumed: bool = False) -> str:
    """The one line a run stops with when `SAETrainer.first_nonfinite_step` found NaN or inf (`first`)."""
    when = (f"the loss or a gradient became NaN or infinite at step {first}" if first
            else "the SAE weights hold NaN or infinite values")
    causes = (f"NaN or inf values in the store {store} (check its {hook} activations; re-harvest a damaged "
              f"store), or a learning rate too high ({'' if lr is None else f'lr={lr:g}; '}lower `lr`)")
    if resumed:
        causes += ", or a damaged checkpoint this run resumed from"
    return (f"training stopped at step {step}: {name + ': ' if name else ''}{when}. Likely cause: {causes}. "
            f"Nothing non-finite was saved: {kept}")


class SAETrainer:
    """Adam on one SAE with the recipe's schedule, clipping and dead-latent bookkeeping.

    `data_parallel=True` all-reduces gradients (and the fired mask) over ranks: each rank holds its
    own share of the global batch. Without it the SAE sees the whole batch on one rank (sweeps).
    """

    def __init__(self, sae: SAE, lr: float, betas: tuple[float, float], grad_clip: float, schedule: WarmupDecay,
                 sparsity_warmup_fraction: float, dead_after: int, autocast_dtype: torch.dtype | None,
                 data_parallel: bool = False):
        self.sae = sae
        self.params = [p for p in sae.parameters() if p.requires_grad]
        device = self.params[0].device
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))
        self.scheduler = lr_scheduler(self.optimizer, schedule)
        self.total_steps = schedule.total_steps
        self.grad_clip = grad_clip
        self.sparsity_warmup_fraction = sparsity_warmup_fraction
        self.dead = DeadLatentTracker(sae.cfg.d_sae, dead_after, device)
        self.autocast_dtype = autocast_dtype
        self.data_parallel = data_parallel and distributed.world_size() > 1
        self.metrics = StepMetrics()
        self.n_dead = 0  # latents dead at the last refresh (see `refresh_dead`)
        # The first step whose loss or gradient norm was not finite (-1: none), kept on the device so that checking
        # costs no host sync per step; read at logging windows and before checkpoints (`first_nonfinite_step`).
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def step(self, x: Float[Tensor, "batch d_in"], step: int, share: float = 1.0,
             global_tokens: int | None = None) -> None:
        """One optimizer step on batch `x` (this rank's `share` of a `global_tokens` batch under data parallel)."""
        state = TrainState(sparsity_scale=sparsity_scale(step, self.total_steps, self.sparsity_warmup_fraction),
                           dead_mask=self.dead.dead_mask if self.n_dead else None, step=step, dead_count=self.n_dead)
        self.sae.train()
        with self._autocast(x.device):
            out = self.sae.training_losses(x, state)
        self.optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        fired = out.fired
        if self.data_parallel:
            fired = self._all_reduce(fired, share)
        self.sae.after_backward()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
                     if self.grad_clip > 0 else torch.zeros((), device=x.device))
        bad = ~torch.isfinite(out.total.detach().float() + grad_norm)  # NaN and inf survive the sum
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        self.optimizer.step()
        self.scheduler.step()
        self.sae.after_step()
        self.dead.update(fired, global_tokens or x.shape[0])
        fvu_num, fvu_den = batch_fvu_parts(self.sae.split_batch(x)[1], out.x_hat)
        self.metrics.add({"loss": out.total, **{f"loss/{k}": v for k, v in out.parts.items()},
                          "fvu_batch": fvu_num / fvu_den, "l0": torch.as_tensor(out.l0, device=x.device),
                          "dead_fraction": self.dead.dead_fraction(), "grad_norm": grad_norm})

    @torch.no_grad()
    def first_nonfinite_step(self) -> int | None:
        """None while every loss, gradient and weight so far is finite; else the first step (counted from 1, as
        logged) whose loss or gradient was NaN or infinite, or 0 when only the weights are (loaded so, broken by the
        last update, or on another data-parallel rank). One host sync; under data parallel all ranks agree."""
        weights_bad = torch.stack([~torch.isfinite(p).all() for p in self.params]).any()
        # [first bad step as logged (0: none), whether anything is bad here]; the flag is summed over ranks
        flags = torch.stack([self._first_bad + 1, ((self._first_bad >= 0) | weights_bad).long()])
        if self.data_parallel:
            flags[1:] = distributed.all_reduce_sum(flags[1:].clone())
        first, bad = (int(v) for v in flags.tolist())
        return first if bad else None

    def refresh_dead(self) -> None:
        """Count the dead latents (one host sync, at logging steps) for the next steps' AuxK.

        With no dead latent the mask is left out, which spares the TopK family an AuxK top-k over
        every latent each step; with a few, AuxK selects only that many instead of k_aux (512). A
        latent that dies starts getting the auxiliary loss at the next refresh, at most one logging
        window later.
        """
        self.n_dead = int(self.dead.dead_mask.sum())

    def _all_reduce(self, fired: Bool[Tensor, " d_sae"], share: float) -> Bool[Tensor, " d_sae"]:
        """Weighted gradient sum over ranks, with the fired masks OR-ed in the same collective."""
        fired_f = fired.float()
        grads = [p.grad for p in self.params if p.grad is not None]
        distributed.all_reduce_flat(grads, weight=share, extra=[fired_f])
        return fired_f > 0

    @torch.no_grad()
    def evaluate(self, x: Float[Tensor, "batch d_batch"]) -> tuple[dict[str, float], Float[Tensor, " d_sae"]]:
        """Inference-mode FVU (of the reconstructed hooks) and L0 on a batch, plus each latent's firing frequency on
        it (one host sync)."""
        x_in, target = self.sae.split_batch(x)
        stats = ReconstructionStats(target.shape[1], self.sae.cfg.d_sae, x.device)
        self.sae.eval()
        with self._autocast(x.device):
            x_hat, z = self.sae.forward_with_latents(x_in)
        self.sae.train()
        stats.update(target, x_hat, z)
        result = stats.result()
        return {"eval/fvu": result["fvu"], "eval/l0": result["l0"]}, stats.freq()

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])  # a float LR (torch also allows tensor LRs)

    def state_dict(self) -> dict:
        return {"sae": {k: v.cpu() for k, v in self.sae.state_dict().items()}, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "dead": self.dead.state_dict(), "n_dead": self.n_dead}

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.dead.load_state_dict(state["dead"])
        self.n_dead = int(state["n_dead"])

    def calibrate(self, batches: Iterable[Float[Tensor, "batch d_in"]]) -> None:
        """After training: fit the SAE's inference-only statistics (BatchTopK's threshold) to its final weights.
        Under data parallel, `sync_buffers` then averages them over ranks."""
        self.sae.eval()
        with self._autocast(self.params[0].device):
            self.sae.calibrate(batches)
        self.sae.train()

    def sync_buffers(self) -> None:
        """Average floating buffers (e.g. BatchTopK's running threshold) over data-parallel ranks."""
        if self.data_parallel:
            for buf in self.sae.buffers():
                if buf.is_floating_point():
                    distributed.all_reduce_mean(buf)
