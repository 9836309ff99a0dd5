"""Sweeps: a grid of SAEs on one store and hook, trained in ONE pass over the data.

One loader feeds every SAE; each SAE has its own optimizer, schedule and dead-latent tracker.
Under torchrun the SAEs are sharded across ranks (largest first onto the least-loaded rank, any
widths, any count): every rank reads a disjoint share of each batch, the shares are all-gathered,
and each rank trains its own SAEs on the whole global batch, so a sharded sweep trains each SAE
exactly as a single process would.

Writes SWEEP_DIR/saes/<name>/ (one dictionary folder each), results.csv and frontier.png; while running,
SWEEP_DIR/checkpoint/ holds the last committed step of every rank (`visae sweep --resume SWEEP_DIR`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from visae.activation_store.loader import ActivationLoader
from visae.core import distributed
from visae.core.atomic import check_output_folder, remove_stale_temporaries
from visae.core.config import load_typed_config
from visae.core.devices import resolve_device
from visae.core.fields import bounds, check_fields
from visae.sae import architecture_traits, create_sae
from visae.training.build import build_trainer, sae_config
from visae.training.checkpoint import (
    RANK_CHECKPOINTS,
    has_rank_checkpoint,
    load_rank_checkpoint,
    remove_rank_checkpoints,
    rng_state,
    save_rank_checkpoint,
    set_rng_state,
)
from visae.training.closing_eval import calibrate, evaluate_many, training_metadata
from visae.training.config import TrainConfig, resolve_defaults, sparsity_label
from visae.training.config import width as n_latents
from visae.training.data import BatchStream, loader_device, mean_norms
from visae.training.hook_set import HookSet, open_hook_set
from visae.training.logger import RunLogger
from visae.training.memory import check_fits
from visae.training.metrics import log10_freq
from visae.training.run_dir import check_same_run, create_run_dir, saved_run_config
from visae.training.sweep_results import RESULTS_FILE, result_row, write_results
from visae.training.trainer import NonFiniteTraining, SAETrainer, nonfinite_message

if TYPE_CHECKING:
    from jaxtyping import Float


@dataclass
class SweepGrid:
    """Values to cross. `k` applies to architectures whose sparsity is set by k (the TopK family),
    `sparsity_coefficient` to the others (standard, jumprelu): see `sae.ArchitectureTraits`."""

    architecture: Annotated[list[str], bounds(non_empty=True)] = field(default_factory=lambda: ["topk"])
    """architectures, e.g. topk batchtopk jumprelu"""
    k: Annotated[list[int], bounds(ge=1, non_empty=True)] = field(default_factory=lambda: [32])
    """active latents per token (TopK family), e.g. 16 32 64"""
    sparsity_coefficient: Annotated[list[Optional[float]], bounds(ge=0, non_empty=True)] = field(
        default_factory=lambda: [None])
    """standard/jumprelu coefficients"""
    expansion_factor: Annotated[list[float], bounds(gt=0, non_empty=True)] = field(default_factory=lambda: [16.0])
    """widths as multiples of d_in, e.g. 8 16 32"""
    d_sae: Annotated[list[int], bounds(ge=1)] = field(default_factory=list)
    """absolute widths; when given, replaces expansion_factor"""
    lr: Annotated[list[Optional[float]], bounds(gt=0, non_empty=True)] = field(default_factory=lambda: [None])
    """learning rates; None = the recipe LR of each SAE"""
    lr_scale: Annotated[list[float], bounds(gt=0, non_empty=True)] = field(default_factory=lambda: [1.0])
    """multiples of each SAE's recipe LR, for points whose lr is None, e.g. 0.5 1 2"""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class SweepConfig(TrainConfig):
    """A TrainConfig (shared settings: store, hook, budget, batch, ...) plus the grid to cross."""

    grid: SweepGrid = field(default_factory=SweepGrid)  # the values to cross
    # SAEs stepped at once on a rank (threads; torch releases the GIL inside its kernels). On a CPU
    # already running every op on all cores this only helped when other jobs kept cores busy, so the
    # default steps them in turn.
    member_threads: Annotated[int, bounds(ge=1)] = 1
    """SAEs stepped at once on a rank, in threads (1: one after the other)"""

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.run_name or f"sweep-{self.hook}-{self.tokens}")


def load_sweep_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> SweepConfig:
    return load_typed_config(SweepConfig, path, list(overrides))


def expand_grid(cfg: SweepConfig) -> list[TrainConfig]:
    """One TrainConfig per distinct grid point (k is ignored off the TopK family, the coefficient on it)."""
    base = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})
    g = cfg.grid
    widths = [("d_sae", w) for w in g.d_sae] or [("expansion_factor", e) for e in g.expansion_factor]
    members, seen = [], set()
    for arch, k, coeff, (width_field, width), lr, scale in itertools.product(
            g.architecture, g.k, g.sparsity_coefficient, widths, g.lr, g.lr_scale):
        topk = architecture_traits(arch).uses_k
        member = replace(base, architecture=arch, k=k if topk else base.k, sparsity_coefficient=None if topk else coeff,
                         lr=lr, lr_scale=1.0 if lr is not None else scale, **{width_field: width})
        member = replace(member, run_name=member_name(member))
        if member.run_name not in seen:
            seen.add(member.run_name)
            members.append(member)
    return members


def member_name(cfg: TrainConfig) -> str:
    width = f"n{cfg.d_sae}" if cfg.d_sae else f"x{cfg.expansion_factor:g}"
    lr = f"-lr{cfg.lr:g}" if cfg.lr is not None else f"-lrx{cfg.lr_scale:g}" if cfg.lr_scale != 1 else ""
    return f"{cfg.architecture}-{sparsity_label(cfg)}-{width}{lr}"


def sweep(cfg: SweepConfig, resume: bool = False) -> Path:
    """Train every SAE of the grid in one pass; returns the sweep folder (results.csv, frontier.png, saes/).

    Checkpoints every `checkpoint_every_steps` (each rank writes the SAEs it owns); with `resume=True`
    the sweep continues from the last one and ends with the same weights as an uninterrupted sweep.
    """
    check_output_folder(cfg.out_dir, "out_dir")
    device = resolve_device(cfg.device)
    distributed.init_from_env(device)
    hooks = open_member_hooks(expand_grid(cfg))
    cfg, d_in = hooks.canonical(cfg), hooks.d_in
    members = [resolve_defaults(m, d_in) for m in expand_grid(cfg)]
    world, rank = distributed.world_size(), distributed.rank()
    owners = distributed.assign_balanced([float(n_latents(m, d_in)) for m in members], world)
    mine = [i for i, owner in enumerate(owners) if owner == rank]
    check_fits([members[i] for i in mine], d_in, device, at_once=cfg.member_threads)
    sweep_dir = cfg.run_dir
    if (sweep_dir / RESULTS_FILE).exists():
        if resume:
            return sweep_dir
        raise FileExistsError(f"{sweep_dir} already holds a finished sweep; choose another out_dir or run_name")
    checkpoint = _prepare_sweep_dir(sweep_dir, cfg, hooks.fingerprint, resume)

    shares = [distributed.share(cfg.batch_size, world, r) for r in range(world)]
    loader = hooks.loader(cfg, shares[rank], cfg.seed, loader_device(device))
    norms = mean_norms(loader)
    total_steps = cfg.total_tokens // cfg.batch_size
    trainers = {i: _member_trainer(members[i], hooks, total_steps, device) for i in mine}
    if checkpoint:
        start, x = _restore(checkpoint, members, trainers, loader), None
        stream = BatchStream(loader, device)
    else:
        stream = BatchStream(loader, device)
        start, x = 0, distributed.all_gather_rows(next(stream), shares)
        for trainer in trainers.values():
            trainer.sae.init_from_data(x, mean_norms=norms)

    logger = RunLogger(sweep_dir, asdict(cfg), cfg.wandb_mode, cfg.wandb_project, sweep_dir.name,
                       resume_step=start if checkpoint else None, enabled=distributed.is_main())
    bar = tqdm(total=total_steps * cfg.batch_size, initial=start * cfg.batch_size, unit="tok", unit_scale=True,
               disable=not distributed.is_main(), smoothing=0.05,
               desc=f"sweep of {len(members)} SAEs ({len(mine)} on rank {rank})")
    pool = ThreadPoolExecutor(cfg.member_threads) if cfg.member_threads > 1 and len(trainers) > 1 else None
    for step in range(start, total_steps):
        if x is None:
            x = distributed.all_gather_rows(next(stream), shares)
        step_members(list(trainers.values()), x, step, pool)
        x = None
        bar.update(cfg.batch_size)
        done = step + 1
        if done % cfg.log_every_steps == 0 or done == total_steps:
            _log_members(logger, done, members, trainers)
            _stop_if_nonfinite(sweep_dir, done, members, trainers, bool(checkpoint))
        if done % cfg.checkpoint_every_steps == 0 and done < total_steps:
            _stop_if_nonfinite(sweep_dir, done, members, trainers, bool(checkpoint))  # never a non-finite checkpoint
            save_rank_checkpoint(sweep_dir, done, {
                "step": done, "config": asdict(cfg), "store_fingerprint": hooks.fingerprint, "rng": rng_state(),
                "loader": loader.state_dict(),
                "members": {members[i].run_name: t.state_dict() for i, t in trainers.items()}})
    bar.close()
    _stop_if_nonfinite(sweep_dir, total_steps, members, trainers, bool(checkpoint))
    # Decided over the whole grid, not this rank's share: every rank joins the batches' all-gather.
    if any(architecture_traits(m.architecture).needs_calibration for m in members):
        calibrate(trainers.values(), (distributed.all_gather_rows(x, shares) for x in stream))
    stream.close()
    if pool is not None:
        pool.shutdown()

    summaries = evaluate_many([t.sae for t in trainers.values()], cfg, hooks, device, cfg.seed + 1, gather=True)
    rows = []
    for (i, trainer), (summary, freq) in zip(trainers.items(), summaries):
        member = members[i]
        assert member.run_name is not None  # named by expand_grid
        trainer.sae.cfg.metadata.update(training_metadata(member, total_steps, summary))
        trainer.sae.save(sweep_dir / "saes" / member.run_name, sparsity=log10_freq(freq))
        rows.append({**result_row(member, summary), "rank": rank})
    rows = [row for part in distributed.all_gather_objects(rows) for row in part]
    if distributed.is_main():
        write_results(sweep_dir, sorted(rows, key=lambda r: r["name"]))
        remove_rank_checkpoints(sweep_dir)
    logger.finish({})
    distributed.barrier()
    return sweep_dir


def resume_sweep(sweep_dir: str | os.PathLike, overrides: Sequence[str] = ()) -> Path:
    """Continue the sweep in `sweep_dir` from its last checkpoint, refusing any change of config or store."""
    saved, location = saved_run_config(sweep_dir, "sweep", "visae sweep --config SWEEP.yaml")
    return sweep(load_sweep_config(saved, [*overrides, *location]), resume=True)


def _prepare_sweep_dir(sweep_dir: Path, cfg: SweepConfig, fingerprint: str, resume: bool) -> dict | None:
    """Create the sweep folder (new sweep) or load and check this rank's checkpoint (resume), first removing the
    temporary files that killed processes left in it."""
    if distributed.is_main():
        for folder in (sweep_dir, sweep_dir / RANK_CHECKPOINTS, sweep_dir / "saes"):
            remove_stale_temporaries(folder)
    if resume:
        checkpoint = load_rank_checkpoint(sweep_dir)
        check_same_run(checkpoint, cfg, fingerprint)
        return checkpoint
    if has_rank_checkpoint(sweep_dir):
        raise FileExistsError(f"{sweep_dir} holds an unfinished sweep; continue it with `visae sweep --resume "
                              f"{sweep_dir}` or choose another out_dir/run_name")
    create_run_dir(sweep_dir, cfg, "saes")
    return None


def _restore(checkpoint: dict, members: list[TrainConfig], trainers: dict, loader: ActivationLoader) -> int:
    for i, trainer in trainers.items():
        trainer.load_state_dict(checkpoint["members"][members[i].run_name])
    loader.load_state_dict(checkpoint["loader"])
    set_rng_state(checkpoint["rng"])
    return int(checkpoint["step"])


def step_members(trainers: list[SAETrainer], x: Float[Tensor, "batch d_in"], step: int,
                 pool: ThreadPoolExecutor | None = None) -> None:
    """One optimizer step of every SAE on the same batch; several at once when given a thread pool.

    Each SAE only reads `x` and touches its own parameters, so the steps are independent and each
    SAE's result does not depend on the scheduling.
    """
    if pool is None:
        for trainer in trainers:
            trainer.step(x, step)
        return
    for future in [pool.submit(trainer.step, x, step) for trainer in trainers]:
        future.result()


def open_member_hooks(members: list[TrainConfig]) -> HookSet:
    """The hooks every member of a sweep reads: one loader feeds them all, so their architectures must read the
    same hooks (all SAEs, all transcoders or all crosscoders)."""
    kinds = {m.architecture: architecture_traits(m.architecture).kind for m in members}
    if len(set(kinds.values())) > 1:
        mix = ", ".join(f"{arch} ({kind})" for arch, kind in kinds.items())
        raise ValueError(f"a sweep's architectures must all read the same hooks, got {mix}; sweep each kind apart")
    return open_hook_set(members[0])


def _member_trainer(member: TrainConfig, hooks: HookSet, total_steps: int, device: torch.device) -> SAETrainer:
    """One SAE and its trainer (seeded by the config alone, so it is the same on whichever rank owns it)."""
    torch.manual_seed(member.seed)
    sae = create_sae(sae_config(member, hooks.shape(), hooks.metadata(member))).to(device)
    return build_trainer(sae, member, total_steps, data_parallel=False)


def _stop_if_nonfinite(sweep_dir: Path, step: int, members: list[TrainConfig], trainers: dict,
                       resumed: bool) -> None:
    """Stop the sweep (every rank) once any SAE's loss, gradient or weights turned NaN or infinite (see
    `training.run.stop_if_nonfinite`); its last committed checkpoint is kept as it was."""
    local = {}
    for i, trainer in trainers.items():
        first = trainer.first_nonfinite_step()
        if first is not None:
            local[members[i].run_name] = first
    bad = {name: first for part in distributed.all_gather_objects(local) for name, first in part.items()}
    if bad:
        name, first = min(bad.items(), key=lambda item: (item[1] or step, item[0]))
        member = next(m for m in members if m.run_name == name)
        others = f" ({len(bad) - 1} other SAE(s) too: {', '.join(sorted(set(bad) - {name}))})" if len(bad) > 1 else ""
        kept = (f"the checkpoint in {sweep_dir / RANK_CHECKPOINTS} was left as it was" if has_rank_checkpoint(sweep_dir)
                else "no checkpoint was written")
        raise NonFiniteTraining(nonfinite_message(step, first, member.store, member.hook, member.lr, kept,
                                                  name=f"SAE {name}{others}", resumed=resumed))


def _log_members(logger: RunLogger, step: int, members: list[TrainConfig], trainers: dict) -> None:
    """Gather every rank's window metrics to the main rank and log them as `<sae name>/<metric>`."""
    for trainer in trainers.values():
        trainer.refresh_dead()
    local = {members[i].run_name: {**t.metrics.flush(), "lr": t.lr()} for i, t in trainers.items()}
    merged = {f"{name}/{k}": v for part in distributed.all_gather_objects(local) for name, m in part.items()
              for k, v in m.items()}
    logger.log(step, merged)
