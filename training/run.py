"""`train(cfg) -> Path`: one SAE trained on one store and hook, with exact resume and data parallelism. A transcoder
or a crosscoder trains the same way on several hooks read together (`training.hook_set`).

A run folder RUN_DIR holds `train_config.yaml`, `train_log.jsonl`, `checkpoint.pt` (while running)
and, when done, the dictionary folder RUN_DIR/sae (SAELens format, written atomically).
Under torchrun every rank reads a disjoint share of the store and gradients are all-reduced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from visae.activation_store.loader import ActivationLoader
from visae.core import distributed
from visae.core.atomic import check_output_folder, remove_stale_temporaries
from visae.core.devices import resolve_device
from visae.sae import create_sae
from visae.training.build import build_trainer, sae_config
from visae.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from visae.training.closing_eval import calibrate, evaluate_summary, training_metadata
from visae.training.config import TrainConfig, load_config, resolve_defaults
from visae.training.data import BatchStream, loader_device, mean_norms
from visae.training.hook_set import open_hook_set
from visae.training.logger import RunLogger
from visae.training.memory import check_fits
from visae.training.metrics import log10_freq
from visae.training.run_dir import (
    SAE_DIR,
    check_same_run,
    create_run_dir,
    saved_run_config,
)
from visae.training.trainer import NonFiniteTraining, SAETrainer, nonfinite_message

if TYPE_CHECKING:
    from jaxtyping import Float


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train one SAE; returns its dictionary folder (RUN_DIR/sae).

    With `resume=True` the run continues from RUN_DIR/checkpoint.pt and must have the same config and store.
    """
    check_output_folder(cfg.out_dir, "out_dir")
    device = resolve_device(cfg.device)
    distributed.init_from_env(device)
    hooks = open_hook_set(cfg)
    d_in = hooks.d_in
    cfg = resolve_defaults(hooks.canonical(cfg), d_in)
    check_fits([cfg], d_in, device)
    run_dir = cfg.run_dir
    if (run_dir / SAE_DIR / "cfg.json").exists():
        if resume:
            return run_dir / SAE_DIR
        raise FileExistsError(f"{run_dir} already holds a finished SAE; choose another out_dir or run_name")
    checkpoint = _prepare_run_dir(run_dir, cfg, hooks.fingerprint, resume)

    world, rank = distributed.world_size(), distributed.rank()
    batch_shares = [distributed.share(cfg.batch_size, world, r) for r in range(world)]
    loader = hooks.loader(cfg, batch_shares[rank], cfg.seed, loader_device(device))
    total_steps = cfg.total_tokens // cfg.batch_size

    torch.manual_seed(cfg.seed)
    sae = create_sae(sae_config(cfg, hooks.shape(), hooks.metadata(cfg))).to(device)
    trainer = build_trainer(sae, cfg, total_steps, data_parallel=True)
    start = _restore(checkpoint, trainer, loader) if checkpoint else 0
    if checkpoint:
        stop_if_nonfinite(trainer, start, cfg, run_dir, resumed=True)  # a damaged (bit-flipped) checkpoint
    stream = BatchStream(loader, device)
    first_batch = None if checkpoint else _init_from_first_batch(sae, stream, loader, batch_shares)

    logger = RunLogger(run_dir, asdict(cfg), cfg.wandb_mode, cfg.wandb_project, cfg.run_name,
                       resume_step=start if checkpoint else None, enabled=distributed.is_main())
    share = batch_shares[rank] / cfg.batch_size
    bar = tqdm(total=total_steps * cfg.batch_size, initial=start * cfg.batch_size, unit="tok", unit_scale=True,
               desc=f"train {cfg.run_name}", disable=not distributed.is_main(), smoothing=0.05)
    try:
        for step in range(start, total_steps):
            x = first_batch if first_batch is not None else next(stream)
            first_batch = None
            evaluation = trainer.evaluate(x) if (step + 1) % cfg.eval_every_steps == 0 else None  # unseen tokens
            trainer.step(x, step, share=share, global_tokens=cfg.batch_size)
            bar.update(cfg.batch_size)
            done = step + 1
            if done % cfg.log_every_steps == 0 or done == total_steps or evaluation:
                _log_window(trainer, logger, bar, done, cfg.batch_size, evaluation)
                stop_if_nonfinite(trainer, done, cfg, run_dir, resumed=bool(checkpoint))
            if done % cfg.checkpoint_every_steps == 0 and done < total_steps:
                _checkpoint(run_dir, trainer, loader, done, cfg, hooks.fingerprint, bool(checkpoint))
        stop_if_nonfinite(trainer, total_steps, cfg, run_dir, bool(checkpoint))  # nor saved non-finite
    except BaseException:
        stream.close()  # stop the loader's threads now, not whenever the garbage collector finds the stream
        raise
    finally:
        bar.close()
    if sae.traits.needs_calibration:
        calibrate([trainer], stream)
    stream.close()
    trainer.sync_buffers()

    summary, freq = evaluate_summary(trainer.sae, cfg, hooks, device, seed=cfg.seed + 1)
    sae.cfg.metadata.update(training_metadata(cfg, total_steps, summary))
    out = run_dir / SAE_DIR
    if distributed.is_main():
        sae.save(out, sparsity=log10_freq(freq))  # atomic: a temporary folder renamed into place
        checkpoint_path(run_dir).unlink(missing_ok=True)
    logger.finish(summary)
    distributed.barrier()
    return out


def resume(run_dir: str | os.PathLike, overrides: Sequence[str] = (), config_path: str | None = None) -> Path:
    """Continue the run in `run_dir` from its checkpoint, refusing any change of config or store."""
    saved, location = saved_run_config(run_dir, "training run", "visae train --config CONFIG.yaml")
    return train(load_config(config_path or saved, [*overrides, *location]), resume=True)


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, fingerprint: str, resume: bool) -> dict | None:
    """Create the run folder (new run) or load and check its checkpoint (resume), first removing the temporary
    files (`.checkpoint.pt.tmp-PID`, ...) that killed processes left in it."""
    if distributed.is_main():
        remove_stale_temporaries(run_dir)
    if not resume:
        if checkpoint_path(run_dir).exists():
            raise FileExistsError(f"{run_dir} holds an unfinished run; continue it with `visae train --resume "
                                  f"{run_dir}` or choose another out_dir/run_name")
        create_run_dir(run_dir, cfg)
        return None
    checkpoint = load_checkpoint(run_dir)
    check_same_run(checkpoint, cfg, fingerprint)
    if len(checkpoint["ranks"]) != distributed.world_size():
        raise ValueError(f"cannot resume: the run was checkpointed with {len(checkpoint['ranks'])} processes, "
                         f"this launch has {distributed.world_size()}; relaunch with the same --nproc_per_node")
    return checkpoint


def stop_if_nonfinite(trainer: SAETrainer, step: int, cfg: TrainConfig, run_dir: Path, resumed: bool = False) -> None:
    """Raise NonFiniteTraining (one line: the step, the likely cause, what was kept) if a loss, gradient or weight
    is NaN or infinite. Called at logging windows, before every checkpoint and before the final save, so a run stops
    at most `log_every_steps` steps after the first NaN and never writes non-finite weights."""
    first = trainer.first_nonfinite_step()
    if first is None:
        return
    kept = checkpoint_path(run_dir)
    raise NonFiniteTraining(nonfinite_message(
        step, first, cfg.store, cfg.hook, cfg.lr, f"{kept} was left as it was" if kept.exists() else
        "no checkpoint was written", resumed=resumed))


def _checkpoint(run_dir: Path, trainer: SAETrainer, loader: ActivationLoader, step: int, cfg: TrainConfig,
                fingerprint: str, resumed: bool = False) -> None:
    trainer.sync_buffers()
    stop_if_nonfinite(trainer, step, cfg, run_dir, resumed)  # never a checkpoint of non-finite weights
    ranks = distributed.all_gather_objects({"rng": rng_state(), "loader": loader.state_dict()})
    if distributed.is_main():
        save_checkpoint(run_dir, {"step": step, "config": asdict(cfg), "store_fingerprint": fingerprint,
                                  "trainer": trainer.state_dict(), "ranks": ranks})
    distributed.barrier()


def _restore(checkpoint: dict, trainer: SAETrainer, loader: ActivationLoader) -> int:
    trainer.load_state_dict(checkpoint["trainer"])
    mine = checkpoint["ranks"][distributed.rank()]
    loader.load_state_dict(mine["loader"])
    set_rng_state(mine["rng"])
    return int(checkpoint["step"])


def _init_from_first_batch(sae, stream: BatchStream, loader: ActivationLoader,
                           batch_shares: list[int]) -> Float[Tensor, "batch d_in"]:
    """Set the input scale and b_dec from the first global batch (which is then trained on); ranks start equal."""
    first = next(stream)
    sae.init_from_data(distributed.all_gather_rows(first, batch_shares), mean_norms=mean_norms(loader))
    _broadcast_parameters(sae)
    return first


def _log_window(trainer: SAETrainer, logger: RunLogger, bar, done: int, batch_size: int,
                evaluation: tuple[dict, Float[Tensor, " d_sae"]] | None) -> None:
    """The one host sync of a logging window: metrics, eval figures and firing histogram, dead-latent refresh."""
    trainer.sync_buffers()
    trainer.refresh_dead()
    eval_metrics, freq = evaluation or ({}, None)
    metrics = {**trainer.metrics.flush(all_ranks=trainer.data_parallel), **eval_metrics, "lr": trainer.lr(),
               "tokens": done * batch_size}
    logger.log(done, metrics, None if freq is None else log10_freq(freq).cpu().numpy())
    bar.set_postfix(loss=f"{metrics['loss']:.4g}", fvu=f"{metrics['fvu_batch']:.3f}", l0=f"{metrics['l0']:.1f}")


def _broadcast_parameters(sae) -> None:
    """Start every data-parallel rank from rank 0's weights."""
    if distributed.world_size() > 1:
        for t in [*sae.parameters(), *sae.buffers()]:
            torch.distributed.broadcast(t.data, src=0)


