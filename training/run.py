"""`train(cfg) -> Path`: one SAE trained on one store and hook, with exact resume and data parallelism.

A run folder RUN_DIR holds `train_config.yaml`, `train_log.jsonl`, `checkpoint.pt` (while running)
and, when done, the dictionary folder RUN_DIR/sae (SAELens format, written atomically).
Under torchrun every rank reads a disjoint share of the store and gradients are all-reduced.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from visae.activation_store.loader import ActivationLoader
from visae.sae import SAEConfig, create_sae
from visae.core import distributed
from visae.training.checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from visae.training.config import TrainConfig, load_config, resolve_defaults, to_yaml, validate
from visae.training.data import BatchStream, mean_norm, open_store
from visae.training.dead_latents import dead_after_tokens
from visae.training.logger import RunLogger
from visae.training.metrics import ReconstructionSummary, log10_freq
from visae.training.trainer import SAETrainer
from visae.training.schedule import warmup_decay

CONFIG_FILE = "train_config.yaml"
SAE_DIR = "sae"
# Config fields a resume may change: they do not touch the weights. The store may move (a copy, or the
# same store on S3); its fingerprint must stay the same.
RESUMABLE_CHANGES = ("wandb_mode", "wandb_project", "log_every_steps", "out_dir", "run_name", "store")
CALIBRATION_BATCHES = 8  # batches that fit inference statistics (BatchTopK's threshold) after training


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is visible; use device=cpu or device=auto")
    return device


def autocast_dtype(dtype: str) -> torch.dtype | None:
    return torch.bfloat16 if dtype == "bfloat16" else None


def sae_config(cfg: TrainConfig, d_in: int, metadata: dict) -> SAEConfig:
    """The SAEConfig of a resolved TrainConfig: architecture, width, k, sparsity coefficient, extras."""
    params = dict(cfg.sae_params)
    if cfg.sparsity_coefficient is not None:
        params["l1_coeff" if cfg.architecture == "standard" else "l0_coeff"] = cfg.sparsity_coefficient
    try:
        return SAEConfig(architecture=cfg.architecture, d_in=d_in, d_sae=cfg.d_sae, k=cfg.k,
                         normalize_activations="expected_average_only_in", metadata=metadata, **params)
    except TypeError as err:
        raise ValueError(f"bad sae_params {sorted(cfg.sae_params)}: {err}; see sae.SAEConfig for the fields") from err


def store_metadata(store, cfg: TrainConfig) -> dict:
    return {"model_name": store.model_spec, "hook_name": cfg.hook, "token_kind": cfg.tokens, "store": str(cfg.store),
            "store_fingerprint": store.fingerprint}


def build_trainer(sae, cfg: TrainConfig, total_steps: int, data_parallel: bool) -> SAETrainer:
    return SAETrainer(
        sae, lr=cfg.lr, betas=tuple(cfg.adam_betas), grad_clip=cfg.grad_clip,
        schedule=warmup_decay(total_steps, cfg.lr_warmup_steps, cfg.lr_warmup_max_fraction, cfg.lr_decay_fraction),
        sparsity_warmup_fraction=cfg.sparsity_warmup_fraction,
        dead_after=dead_after_tokens(cfg.dead_after_tokens, cfg.dead_max_fraction, cfg.total_tokens),
        autocast_dtype=autocast_dtype(cfg.dtype), data_parallel=data_parallel,
    )


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train one SAE; returns its dictionary folder (RUN_DIR/sae).

    With `resume=True` the run continues from RUN_DIR/checkpoint.pt and must have the same config and store.
    """
    cfg = validate(cfg)
    device = resolve_device(cfg.device)
    distributed.init_from_env(device)
    store, hook = open_store(cfg.store, cfg.hook)
    cfg = replace(cfg, hook=hook)
    d_in = store.d(hook)
    cfg = resolve_defaults(cfg, d_in)
    run_dir = cfg.run_dir
    if (run_dir / SAE_DIR / "cfg.json").exists():
        if resume:
            return run_dir / SAE_DIR
        raise FileExistsError(f"{run_dir} already holds a finished SAE; choose another out_dir or run_name")
    checkpoint = _prepare_run_dir(run_dir, cfg, store.fingerprint, resume)

    world, rank = distributed.world_size(), distributed.rank()
    batch_shares = [distributed.share(cfg.batch_size, world, r) for r in range(world)]
    loader = ActivationLoader(store, cfg.hook, tokens=cfg.tokens, batch_size=batch_shares[rank], seed=cfg.seed)
    total_steps = cfg.total_tokens // cfg.batch_size

    torch.manual_seed(cfg.seed)
    sae = create_sae(sae_config(cfg, d_in, store_metadata(store, cfg))).to(device)
    trainer = build_trainer(sae, cfg, total_steps, data_parallel=True)
    start = _restore(checkpoint, trainer, loader) if checkpoint else 0
    stream = BatchStream(loader, device)
    first_batch = None if checkpoint else _init_from_first_batch(sae, stream, loader, batch_shares)

    logger = RunLogger(run_dir, asdict(cfg), cfg.wandb_mode, cfg.wandb_project, cfg.run_name,
                       resume_step=start if checkpoint else None, enabled=distributed.is_main())
    share = batch_shares[rank] / cfg.batch_size
    bar = tqdm(total=total_steps * cfg.batch_size, initial=start * cfg.batch_size, unit="tok", unit_scale=True,
               desc=f"train {cfg.run_name}", disable=not distributed.is_main(), smoothing=0.05)
    for step in range(start, total_steps):
        x = first_batch if first_batch is not None else next(stream)
        first_batch = None
        evaluation = trainer.evaluate(x) if (step + 1) % cfg.eval_every_steps == 0 else None  # unseen tokens
        trainer.step(x, step, share=share, global_tokens=cfg.batch_size)
        bar.update(cfg.batch_size)
        done = step + 1
        if done % cfg.log_every_steps == 0 or done == total_steps or evaluation:
            _log_window(trainer, logger, bar, done, cfg.batch_size, evaluation)
        if done % cfg.checkpoint_every_steps == 0 and done < total_steps:
            _checkpoint(run_dir, trainer, loader, done, cfg, store.fingerprint)
    bar.close()
    if sae.needs_calibration:
        trainer.calibrate(next(stream) for _ in range(CALIBRATION_BATCHES))
    stream.close()
    trainer.sync_buffers()

    summary, freq = evaluate_summary(trainer.sae, cfg, store, device, seed=cfg.seed + 1)
    sae.cfg.metadata.update(training_metadata(cfg, total_steps, summary))
    out = run_dir / SAE_DIR
    if distributed.is_main():
        sae.save(out, sparsity=log10_freq(freq))  # atomic: a temporary folder renamed into place
        checkpoint_path(run_dir).unlink(missing_ok=True)
    logger.finish(summary)
    distributed.barrier()
    return out


def resume(run_dir: str | os.PathLike, overrides: list[str] = (), config_path: str | None = None) -> Path:
    """Continue the run in `run_dir` from its checkpoint, refusing any change of config or store."""
    saved, location = saved_run_config(run_dir, "training run", "visae train CONFIG.yaml")
    return train(load_config(config_path or saved, [*overrides, *location]), resume=True)


def saved_run_config(run_dir: str | os.PathLike, what: str, command: str) -> tuple[Path, list[str]]:
    """The config a run folder saved, and the overrides that keep the run in that folder (for resuming)."""
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a visae {what} (no {CONFIG_FILE}); start one with `{command}`")
    return saved, [f"out_dir={run_dir.parent}", f"run_name={run_dir.name}"]


def training_metadata(cfg: TrainConfig, total_steps: int, summary: dict) -> dict:
    return {"training_tokens": total_steps * cfg.batch_size, "training_steps": total_steps,
            "training_config": asdict(cfg), "eval_summary": summary,
            "fvu": summary["fvu"], "l0": summary["l0"], "dead_fraction": summary["dead_fraction"]}


@torch.no_grad()
def evaluate_summary(sae, cfg: TrainConfig, store, device: torch.device, seed: int) -> tuple[dict, torch.Tensor]:
    """FVU, L0 and dead fraction (design.md §5) on `cfg.eval_tokens` tokens drawn with another seed.

    The tokens come from the same store (not a held-out split); with a budget under one epoch many are
    unseen. Under torchrun every rank streams its share and the sums are all-reduced.
    """
    return evaluate_many([sae], cfg, store, device, seed)[0]


@torch.no_grad()
def evaluate_many(saes: list, cfg: TrainConfig, store, device: torch.device, seed: int,
                  gather: bool = False) -> list[tuple[dict, torch.Tensor]]:
    """`evaluate_summary` for several SAEs on one pass over the evaluation tokens.

    Under torchrun each rank reads its share; with `gather` the shares are all-gathered so each rank
    evaluates its own SAEs on every token (sharded sweeps), otherwise the sums are all-reduced.
    """
    world = distributed.world_size()
    batch = min(cfg.batch_size, cfg.eval_tokens)
    shares = [distributed.share(batch, world, r) for r in range(world)]
    loader = ActivationLoader(store, cfg.hook, tokens=cfg.tokens, batch_size=shares[distributed.rank()], seed=seed)
    stream = BatchStream(loader, device)
    summaries = [ReconstructionSummary(store.d(cfg.hook), sae.cfg.d_sae) for sae in saes]
    for sae in saes:
        sae.eval()
    for _ in range(max(1, math.ceil(cfg.eval_tokens / batch))):
        x = next(stream)
        if gather:
            x = distributed.all_gather_rows(x, shares)
        for sae, summary in zip(saes, summaries):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16"):
                z = sae.encode(x)
                x_hat = sae.decode(z)
            summary.update(x, x_hat, z)
    stream.close()
    out = []
    for summary in summaries:
        if not gather:
            summary.all_reduce()
        out.append((summary.result(), summary.freq()))
    return out


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, fingerprint: str, resume: bool) -> dict | None:
    """Create the run folder (new run) or load and check its checkpoint (resume)."""
    if not resume:
        if checkpoint_path(run_dir).exists():
            raise FileExistsError(f"{run_dir} holds an unfinished run; continue it with `visae train --resume "
                                  f"{run_dir}` or choose another out_dir/run_name")
        if distributed.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / CONFIG_FILE, to_yaml(cfg))
        distributed.barrier()
        return None
    checkpoint = load_checkpoint(run_dir)
    check_same_run(checkpoint, cfg, fingerprint)
    if len(checkpoint["ranks"]) != distributed.world_size():
        raise ValueError(f"cannot resume: the run was checkpointed with {len(checkpoint['ranks'])} processes, "
                         f"this launch has {distributed.world_size()}; relaunch with the same --nproc_per_node")
    return checkpoint


def check_same_run(checkpoint: dict, cfg: TrainConfig, fingerprint: str) -> None:
    """Refuse to resume a checkpoint under a changed config (beyond `RESUMABLE_CHANGES`) or another store."""
    saved, now = checkpoint["config"], asdict(cfg)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume: the config differs from the checkpoint's ({diffs}); resume with the "
                         "original config, or start a new run in another out_dir/run_name")
    if checkpoint["store_fingerprint"] != fingerprint:
        raise ValueError(f"cannot resume: the store at {cfg.store} has fingerprint {fingerprint}, but this run "
                         f"was trained on {checkpoint['store_fingerprint']}; point `store` at the original store "
                         "or start a new run")


def _checkpoint(run_dir: Path, trainer: SAETrainer, loader: ActivationLoader, step: int, cfg: TrainConfig,
                fingerprint: str) -> None:
    trainer.sync_buffers()
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


def _init_from_first_batch(sae, stream: BatchStream, loader: ActivationLoader, batch_shares: list[int]) -> torch.Tensor:
    """Set the input scale and b_dec from the first global batch (which is then trained on); ranks start equal."""
    first = next(stream)
    sae.init_from_data(distributed.all_gather_rows(first, batch_shares), mean_norm=mean_norm(loader))
    _broadcast_parameters(sae)
    return first


def _log_window(trainer: SAETrainer, logger: RunLogger, bar, done: int, batch_size: int,
                evaluation: tuple[dict, torch.Tensor] | None) -> None:
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


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
