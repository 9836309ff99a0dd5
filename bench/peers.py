"""visae's TopK SAE against its peers (SAELens, dictionary_learning) on the same data and budget: one JSON object.

Speed (random data in memory, fp32, d=384, n=6144, k=32, batch 4096 by default): tokens/s of one full
training step (forward, backward, optimizer step) of
- visae: `training.SAETrainer` around a TopK `sae.create_sae`, built by bench/train.py's `make_trainer`;
- SAELens: its `TopKTrainingSAE` stepped by its own `sae_lens.SAETrainer.step` (its `training_forward_pass`,
  `loss.backward()`, grad-norm clip 1.0, torch Adam step, LR scheduler step; the decoder norm enters through
  `rescale_acts_by_decoder_norm`, SAELens's TopK default). Only the trainer's step is driven: SAELens's
  runner (`LanguageModelSAETrainingRunner`), which needs a transformer model, is not used;
- dictionary_learning (when importable): `trainers.top_k.TopKTrainer.update` (forward, backward, gradient
  projection off the decoder directions, clip, Adam, decoder renormalisation).
No dead latents exist during the timed steps, so none of the three runs its AuxK term there. The rounds
interleave the three; figures are medians of `--repeats` rounds, and `vs_visae` is peer / visae.

Quality (real activations: the shipped toy model's store, `--store`, harvested into a temporary folder when
not given): each library trains a TopK SAE (16x width, k=32) on the same token stream and budget (visae's
`ActivationLoader` with seed `--seed`, full batches of `--batch`), each with its own recipe:
- visae: `training.run.train(TrainConfig(...))`, recipe defaults;
- SAELens: `sae_lens.SAETrainer(...).fit()` on a data provider that yields the same batches; its defaults for
  TopK (LR 3e-4 constant, plus by default a second run at visae's LR, see `--saelens-lr`; AuxK coefficient 1
  with k_aux = d_in/2, dead after `dead_feature_window` = 1000 steps, decoder init norm 0.1, b_dec 0). Its
  `normalize_activations="expected_average_only_in"` is visae's normalisation (√d_in / E‖x‖); its scale is
  set from the store's E‖x‖ (the figure visae uses) before `fit`, so SAELens's own estimate does not consume
  training batches;
- dictionary_learning: `dictionary_learning.training.trainSAE` with a `TopKTrainer` (its LR rule 2e-4/√(n/2^14),
  AuxK 1/32 with k_aux = d_in/2, dead after 10M tokens, geometric-median b_dec, no LR decay) and its
  `normalize_activations=True` (unit mean squared norm, its own estimate over ~100 batches of a fresh pass of
  the same stream). Its default 1000 warm-up steps must be shorter than the run, so it gets visae's warm-up.
Every trained SAE is then evaluated by the same code on the same tokens through its library's inference path
on raw activations (visae `SAE.load`, SAELens `SAE.load_from_disk` of `save_inference_model`, dictionary_learning
`AutoEncoderTopK.from_pretrained`): FVU per docs/metrics.md, L0 and the dead fraction (latents that fired on none
of the N evaluation tokens) with `core.reconstruction.ReconstructionStats`, on `--eval-tokens` tokens of a
loader with seed `--seed + 1` (every token of the store once when it holds fewer), from the training store or,
with `--eval-store heldout`, from a store of other images that no SAE trained on.

dictionary_learning 0.1.0 (PyPI) imports nnsight 0.3 when imported. To keep the global environment untouched,
install it without dependencies into a virtual environment that sees the global packages (torch included):

    python -m venv --system-site-packages /tmp/dl-venv
    /tmp/dl-venv/bin/pip install --no-deps dictionary-learning "nnsight>=0.3,<0.4" python-socketio \
        python-engineio bidict simple-websocket wsproto

then run this script with /tmp/dl-venv/bin/python, or put its site-packages on PYTHONPATH
(PYTHONPATH=/tmp/dl-venv/lib/python3.11/site-packages python bench/peers.py).

    python bench/peers.py [--d 384 --n 6144 --k 32 --batch 4096 --steps 3 --repeats 3]
                          [--sets toy-resid,toy-mlp:4:2e6,... | --store STORE --hook blocks.-2.resid_post]
                          [--tokens 4e6 --eval-tokens 262144]
                          [--eval-store train|heldout|PATH] [--saelens-lr default,visae]
                          [--skip-speed] [--skip-quality]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from train import make_trainer

from visae.activation_store.loader import ActivationLoader
from visae.core.reconstruction import ReconstructionStats
from visae.training.data import BatchStream, mean_norm, open_store

SAELENS_DEFAULT_LR = 3e-4  # sae_lens SAETrainerConfig / LanguageModelSAERunnerConfig default


# ---------------------------------------------------------------------------------------------- peers


def import_dictionary_learning():
    """(TopKTrainer, AutoEncoderTopK, trainSAE, version) or a string saying why it is unavailable."""
    try:
        # An optional peer, absent where the benchmark is not run: reported as unavailable below.
        from dictionary_learning.trainers.top_k import (  # pyright: ignore[reportMissingImports]
            AutoEncoderTopK,
            TopKTrainer,
        )
        from dictionary_learning.training import trainSAE  # pyright: ignore[reportMissingImports]
    except ModuleNotFoundError as err:
        return "not installed" if err.name == "dictionary_learning" else f"not importable: {err}"
    except Exception as err:  # noqa: BLE001 - any import failure means "not available", reported as such
        return f"not importable: {type(err).__name__}: {err}"
    return TopKTrainer, AutoEncoderTopK, trainSAE, _version("dictionary-learning")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def saelens_trainer(d: int, n: int, k: int, batch: int, steps: int, lr: float, data_provider,
                    normalize: bool, dead_feature_window: int = 1000):
    """SAELens's TopK training SAE and its own trainer, TopK defaults except the named arguments."""
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=d, d_sae=n, k=k, dtype="float32", device="cpu",
        normalize_activations="expected_average_only_in" if normalize else "none"))
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=lr,
                           lr_end=lr / 10,  # the runner config's post-init default (unused by "constant")
                           device="cpu", dead_feature_window=dead_feature_window)
    return SAETrainer(cfg=cfg, sae=sae, data_provider=data_provider)


def dl_trainer_config(dl, d: int, n: int, k: int, steps: int, warmup: int, seed: int) -> dict:
    TopKTrainer = dl[0]
    return dict(trainer=TopKTrainer, steps=steps, activation_dim=d, dict_size=n, k=k, layer=0, lm_name="visae-bench",
                warmup_steps=warmup, seed=seed, device="cpu")


# ---------------------------------------------------------------------------------------------- speed


def speed(args, dl) -> dict:
    torch.manual_seed(0)
    data = [torch.randn(args.batch, args.d) for _ in range(args.steps)]
    warm = torch.randn(args.batch, args.d)

    visae = make_trainer(args, torch.device("cpu"), 0, None)
    visae.step(warm, 0)
    torch.manual_seed(0)
    lens = saelens_trainer(args.d, args.n, args.k, args.batch, 10**6, SAELENS_DEFAULT_LR, iter(()), normalize=False)
    lens.step(warm)
    runs = {
        "visae": lambda: [visae.step(x, i + 1) for i, x in enumerate(data)],
        "saelens": lambda: [lens.step(x) for x in data],
    }
    if not isinstance(dl, str):
        config = dl_trainer_config(dl, args.d, args.n, args.k, 10**6, 1000, 0)
        trainer = config.pop("trainer")(**config)
        trainer.update(0, warm)  # step 0 sets b_dec to the batch's geometric median: left out of the timing
        trainer.update(1, warm)
        runs["dictionary_learning"] = lambda: [trainer.update(i + 2, x) for i, x in enumerate(data)]

    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / args.steps)
    tokens_s = {name: args.batch / statistics.median(t) for name, t in times.items()}
    return {
        "device": "cpu", "dtype": "float32", "threads": torch.get_num_threads(),
        "d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "tokens_per_s": {name: round(v) for name, v in tokens_s.items()},
        "vs_visae": {name: round(v / tokens_s["visae"], 3) for name, v in tokens_s.items() if name != "visae"},
    }


# ---------------------------------------------------------------------------------------------- quality


def batches(store, hook: str, batch: int, seed: int):
    """The training token stream every library sees: visae's loader and BatchStream (full batches)."""
    stream = BatchStream(ActivationLoader(store, hook, batch_size=batch, seed=seed), torch.device("cpu"))
    try:
        yield from stream
    finally:
        stream.close()


class Reiterable:
    """The same stream from its start on every `iter` (dictionary_learning iterates its data twice)."""

    def __init__(self, *args):
        self.args = args

    def __iter__(self):
        return batches(*self.args)


def eval_batches(store, hook: str, batch: int, seed: int, n_tokens: int):
    """`n_tokens` tokens of a loader with another seed, or every token of the store once when it holds fewer."""
    loader = ActivationLoader(store, hook, batch_size=batch, seed=seed,
                              epochs=1 if loader_epoch(store, hook) <= n_tokens else None)
    served = 0
    for x in loader:
        x = x[:n_tokens - served].float()
        served += x.shape[0]
        yield x
        if served >= n_tokens:
            break


def loader_epoch(store, hook: str) -> int:
    return ActivationLoader(store, hook).tokens_per_epoch


@torch.no_grad()
def evaluate(models: dict, store, hook: str, batch: int, seed: int, n_tokens: int, d: int, n: int,
             truth: torch.Tensor | None = None) -> dict:
    summaries = {name: ReconstructionStats(d, n) for name in models}
    for x in eval_batches(store, hook, batch, seed, n_tokens):
        for name, (encode, decode) in models.items():
            z = encode(x)
            summaries[name].update(x, decode(z), z)
    out = {}
    for name, summary in summaries.items():
        r = summary.result()
        out[name] = {"fvu": round(r["fvu"], 5), "l0": round(r["l0"], 3), "dead_fraction": round(r["dead_fraction"], 4),
                     "dead_latents": int((summary.fire_counts == 0).sum())}
        if truth is not None:
            out[name]["mmcs"] = round(ground_truth_mmcs(models[name][1], n, truth), 4)
    return out


@torch.no_grad()
def ground_truth_mmcs(decode, n: int, truth: torch.Tensor) -> float:
    """MMCS of the true features against the dictionary (docs/metrics.md): the mean over the true directions of
    the best cosine with a decoder direction. Directions are read through each library's own decode, as
    decode(one-hot) - decode(0), so no library's weight layout is assumed."""
    zero = decode(torch.zeros(1, n))
    best = torch.full((truth.shape[0],), -1.0)
    for start in range(0, n, 1024):
        rows = decode(torch.eye(n)[start:start + 1024]) - zero
        rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        best = torch.maximum(best, (truth @ rows.T).max(1).values)
    return float(best.mean())


def train_visae(store_path: str, hook: str, args, steps: int, work: Path, architecture: str = "topk"):
    from visae.sae import SAE
    from visae.training.config import TrainConfig, resolve_defaults
    from visae.training.dead_latents import dead_after_tokens
    from visae.training.run import train

    cfg = TrainConfig(store=store_path, hook=hook, architecture=architecture, k=args.k,
                      expansion_factor=args.expansion, total_tokens=steps * args.batch, batch_size=args.batch,
                      seed=args.seed, device="cpu", out_dir=str(work), run_name=f"visae-{architecture}",
                      checkpoint_every_steps=10**9, eval_every_steps=10**9, eval_tokens=args.batch,
                      wandb_mode="disabled")
    start = time.perf_counter()
    sae = SAE.load(train(cfg))
    seconds = time.perf_counter() - start
    resolved = resolve_defaults(cfg, sae.cfg.d_in)
    assert resolved.dead_max_fraction is not None
    schedule = visae_schedule(steps, architecture)
    setup = {"lr": resolved.lr, "schedule": f"linear warm-up {schedule.warmup_steps} steps, linear decay to 0 over "
             f"the last {schedule.decay_steps} steps", "grad_clip": cfg.grad_clip,
             "auxk": f"coeff {sae.cfg.aux_coeff:g}, k_aux {sae.cfg.k_aux}, FVU units",
             "dead_after_tokens": dead_after_tokens(cfg.dead_after_tokens, resolved.dead_max_fraction,
                                                    cfg.total_tokens),
             "normalisation": "expected_average_only_in (sqrt(d)/E||x||, E||x|| from the store), folded on save",
             "b_dec_init": "mean of the first batch", "decoder": "unit-norm rows"}
    models = {"": (sae.encode, sae.decode)}
    if architecture != "topk":  # BatchTopK family (saved as JumpReLU): the inference threshold and the batch rule
        models["batch_rule"] = (partial(batch_rule_encode, sae, args.k), sae.decode)
    return models, seconds, setup


def batch_rule_encode(sae, k: int, x: torch.Tensor) -> torch.Tensor:
    """BatchTopK's training rule on an evaluation batch: the k * batch largest (ReLU'd) pre-activations."""
    pre = sae.pre_acts(x).relu().reshape(-1)
    keep = pre.topk(k * x.shape[0]).indices
    return torch.zeros_like(pre).scatter_(0, keep, pre[keep]).reshape(x.shape[0], -1)


def train_saelens(store, hook: str, args, steps: int, lr: float, work: Path, name: str):
    from sae_lens import SAE

    d = store.d(hook)
    torch.manual_seed(args.seed)
    data = batches(store, hook, args.batch, args.seed)
    trainer = saelens_trainer(d, int(round(args.expansion * d)), args.k, args.batch, steps, lr, data, normalize=True,
                              dead_feature_window=args.saelens_dead_window)
    norm = mean_norm(ActivationLoader(store, hook))
    trainer.activation_scaler.scaling_factor = math.sqrt(d) / norm
    start = time.perf_counter()
    sae = trainer.fit()
    data.close()
    seconds = time.perf_counter() - start
    sae.save_inference_model(work / name)
    inference = SAE.load_from_disk(work / name, device="cpu")
    setup = {"lr": lr, "lr_source": "SAELens default" if lr == SAELENS_DEFAULT_LR else "set (visae's LR)",
             "schedule": "constant, no warm-up (SAELens default)", "grad_clip": 1.0,
             "auxk": f"coeff {sae.cfg.aux_loss_coefficient:g}, k_aux d_in/2 = {d // 2}, MSE units (SAELens default)",
             "dead_after_tokens": args.saelens_dead_window * args.batch,
             "dead_feature_window_steps": args.saelens_dead_window,
             "normalisation": "expected_average_only_in, scale sqrt(d)/E||x|| from the store, folded by fit()",
             "b_dec_init": "zeros", "decoder": "init norm 0.1, rescale_acts_by_decoder_norm=True",
             "n_dead_at_end_of_training": int(trainer.dead_neurons.sum())}
    return {"": (inference.encode, inference.decode)}, seconds, setup


def train_dictionary_learning(dl, store, hook: str, args, steps: int, warmup: int, work: Path):
    _, AutoEncoderTopK, trainSAE, _ = dl
    d = store.d(hook)
    n = int(round(args.expansion * d))
    config = dl_trainer_config(dl, d, n, args.k, steps, warmup, args.seed)
    start = time.perf_counter()
    trainSAE(Reiterable(store, hook, args.batch, args.seed), [config], steps=steps, save_dir=str(work / "dl"),
             normalize_activations=True, device="cpu")
    seconds = time.perf_counter() - start
    ae = AutoEncoderTopK.from_pretrained(str(work / "dl" / "trainer_0" / "ae.pt"), device="cpu")
    setup = {"lr": 2e-4 / math.sqrt(n / 2**14), "lr_source": "dictionary_learning's rule 2e-4/sqrt(n/2^14)",
             "schedule": f"linear warm-up {warmup} steps (visae's; its default 1000 exceeds the run), no decay "
             "(decay_start=None default)", "grad_clip": 1.0,
             "auxk": f"coeff 1/32, k_aux d_in/2 = {d // 2}, normalised by the residual's variance",
             "dead_after_tokens": 10_000_000,
             "normalisation": "trainSAE normalize_activations=True (E||x||^2 = 1, estimated on ~100 batches), "
             "folded into the biases on save",
             "b_dec_init": "geometric median of the first batch",
             "decoder": "unit-norm columns, parallel gradient removed"}
    return {"": (ae.encode, ae.decode)}, seconds, setup


def harvest_heldout(work: Path, n_images: int, hook: str) -> str:
    """A store of other shapes images (dataset seed 1, the quickstart's is 0): tokens no SAE trained on."""
    from visae.activation_store.harvest_config import HarvestConfig
    from visae.activation_store.harvester import harvest
    from visae.service.commands.quickstart import MODEL

    path = work / "heldout.zarr"
    harvest(HarvestConfig(out=str(path), model=MODEL, images=f"shapes:n={n_images},seed=1", hooks=[hook],
                          tokens="all", batch_size=64))
    return str(path)


def eval_store(args, store, hook: str, work: Path):
    """The store the evaluation tokens come from (see --eval-store) and a note saying what they are."""
    if args.eval_store == "train":
        return store, "tokens of the training store"
    if args.eval_store == "heldout":
        return (open_store(harvest_heldout(work, args.n_images, hook), hook)[0],
                f"held out: {args.n_images} other shapes images (dataset seed 1), harvested for this run")
    return open_store(args.eval_store, hook)[0], f"tokens of {args.eval_store}"


def quality(args, dl) -> dict:
    """Every set of --sets (or --store alone): the libraries' figures on it, its targets, and one table."""
    from peer_sets import ActivationSet, build

    sets = [(ActivationSet("store", args.store, args.hook), {})] if args.store else [
        (build(name), set_options(options))
        for name, _, options in (spec.partition(":") for spec in args.sets.split(","))]
    out = {}
    for activation_set, options in sets:
        print(f"[peers] set {activation_set.name}", file=sys.stderr)
        out[activation_set.name] = quality_on(argparse.Namespace(**{**vars(args), **options}), dl, activation_set)
    print(table(out))
    return out


def set_options(options: str) -> dict:
    """A --sets entry's options after its name, EXPANSION[:TOKENS] (each may be empty): what it overrides."""
    expansion, _, tokens = options.partition(":")
    return {**({"expansion": float(expansion)} if expansion else {}), **({"tokens": float(tokens)} if tokens else {})}


def quality_on(args, dl, activation_set) -> dict:
    """Each library trained on one set's stream (visae: every architecture of --architectures), then evaluated."""
    truth = activation_set.truth_directions()
    truth = None if truth is None else torch.from_numpy(truth)
    with tempfile.TemporaryDirectory(prefix="visae-peers-") as tmp:
        work = Path(tmp)
        with contextlib.redirect_stdout(sys.stderr):  # stdout is for the table only
            store_path = activation_set.store
            store, hook = open_store(store_path, activation_set.hook)
            d = store.d(hook)
            n = int(round(args.expansion * d))
            steps = int(args.tokens) // args.batch
            warmup = visae_schedule(steps).warmup_steps
            models, results = {}, {}
            trainers: list[tuple[str, Callable[[], tuple[Any, float, dict]]]] = [
                (f"visae_{arch}" if arch != "topk" else "visae",
                 lambda arch=arch: train_visae(store_path, hook, args, steps, work, arch))
                for arch in args.architectures.split(",")]
            for lr in filter(None, args.saelens_lr.split(",")):
                value = {"default": SAELENS_DEFAULT_LR, "visae": visae_lr(n, d)}.get(lr) or float(lr)
                name = "saelens" if lr == "default" else f"saelens_lr_{lr}"
                trainers.append((name, lambda value=value, name=name: train_saelens(store, hook, args, steps, value,
                                                                                  work, name)))
            if not isinstance(dl, str):
                trainers.append(("dictionary_learning",
                                 lambda: train_dictionary_learning(dl, store, hook, args, steps, warmup, work)))
            for name, fit in trainers:
                print(f"[peers] training {name}", file=sys.stderr)
                fitted, seconds, setup = fit()
                models.update({f"{name}_{rule}" if rule else name: model for rule, model in fitted.items()})
                results[name] = {"train_s": round(seconds, 1), "setup": setup}
            store_tokens = loader_epoch(store, hook)
            evaluation, note = eval_store(args, store, hook, work)
            n_eval = min(args.eval_tokens, loader_epoch(evaluation, hook))
            if n_eval < args.eval_tokens:
                note += f"; every token once (it holds fewer than --eval-tokens {args.eval_tokens})"
            figures = evaluate(models, evaluation, hook, args.batch, args.seed + 1, n_eval, d, n, truth)
            print(f"[peers] {json.dumps(figures)}", file=sys.stderr)
    for name in results:
        results[name] = {**figures[name], **results[name]}
        if f"{name}_batch_rule" in figures:
            results[name]["batch_rule"] = figures[f"{name}_batch_rule"]
    return {
        "store": store_path, "hook": hook, "token_kind": "all", "d_in": d, "d_sae": n, "k": args.k,
        "batch": args.batch, "steps": steps, "training_tokens": steps * args.batch, "store_tokens": store_tokens,
        "seed": args.seed, "eval": {"tokens": n_eval, "loader_seed": args.seed + 1, "tokens_are": note},
        "results": results, "targets": targets(figures, args.k),
    }


def targets(figures: dict, k: int) -> dict:
    """The issue's targets for each visae architecture: FVU <= every SAELens run's, MMCS >= the best peer's
    (where the truth is known), dead < 1%, and (BatchTopK family) inference L0 within 10% of k."""
    peers = {name: f for name, f in figures.items() if not name.startswith("visae")}
    lens_fvu = min((f["fvu"] for name, f in peers.items() if name.startswith("saelens")), default=None)
    peer_mmcs = max((f["mmcs"] for f in peers.values() if "mmcs" in f), default=None)
    out = {}
    for name, f in figures.items():
        if not name.startswith("visae") or name.endswith("_batch_rule"):
            continue
        met = {"fvu_le_saelens": lens_fvu is None or f["fvu"] <= lens_fvu, "dead_lt_1pct": f["dead_fraction"] < 0.01}
        if peer_mmcs is not None:
            met["mmcs_ge_best_peer"] = f["mmcs"] >= peer_mmcs
        if name != "visae":
            met["l0_within_10pct_of_k"] = abs(f["l0"] - k) <= 0.1 * k
        out[name] = {**met, "all": all(met.values())}
    return out


def table(sets: dict) -> str:
    """One line per (set, library): FVU, L0, dead fraction, MMCS, and the batch rule's FVU where there is one."""
    lines = [f"{'set':<12} {'d_in':>4} {'steps':>5} {'library':<32} {'FVU':>7} {'L0':>6} {'dead':>7} {'MMCS':>6} "
             f"{'FVU batch rule':>14}"]
    for name, q in sets.items():
        for lib, r in q["results"].items():
            mmcs = f"{r['mmcs']:.3f}" if "mmcs" in r else "-"
            rule = f"{r['batch_rule']['fvu']:.4f}" if "batch_rule" in r else "-"
            lr = r["setup"]["lr"]
            lines.append(f"{name:<12} {q['d_in']:>4} {q['steps']:>5} {f'{lib} ({lr:.2g})':<32} {r['fvu']:>7.4f} "
                         f"{r['l0']:>6.1f} {r['dead_fraction']:>7.2%} {mmcs:>6} {rule:>14}")
    return "\n".join(lines)


def visae_schedule(steps: int, architecture: str = "topk"):
    """visae's LR schedule for `architecture` under the TrainConfig defaults (as `training.build.build_trainer`
    makes it)."""
    from visae.sae.registry import architecture_traits
    from visae.training.config import TrainConfig
    from visae.training.schedule import warmup_decay

    cfg, traits = TrainConfig(), architecture_traits(architecture)
    return warmup_decay(steps, cfg.lr_warmup_steps, cfg.lr_warmup_max_fraction, traits.lr_decay)


def visae_lr(n: int, d: int) -> float:
    from visae.training.config import default_lr

    return default_lr("topk", n, d)


# The widest sets train at 4x width and 1M tokens (about 250 steps) so the whole table fits an hour of 2 CPU cores.
DEFAULT_SETS = "toy-resid,toy-mlp:4:2e6,synthetic:16:1.05e6,vit-b:4:1e6,anisotropic:4:1e6"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--d", type=int, default=384, help="speed: input width")
    p.add_argument("--n", type=int, default=6144, help="speed: latents")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=3, help="speed: training steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="speed: interleaved rounds; figures are medians")
    p.add_argument("--sets", default=DEFAULT_SETS,
                   help="quality: the activation sets of bench/peer_sets.py, NAME[:EXPANSION[:TOKENS]] "
                        "(defaults: --expansion, --tokens)")
    p.add_argument("--store", default=None, help="quality: one activation store instead of --sets")
    p.add_argument("--architectures", default="topk,batchtopk,matryoshka_batchtopk",
                   help="quality: the visae architectures to train (the peers train TopK)")
    p.add_argument("--json", default="peers.json", help="where the JSON object is written")
    p.add_argument("--n-images", type=int, default=2048,
                   help="quality: shapes images of the held-out store (--eval-store heldout)")
    p.add_argument("--hook", default="blocks.-2.resid_post")
    p.add_argument("--tokens", type=float, default=4e6, help="quality: training token budget of every library")
    p.add_argument("--expansion", type=float, default=16.0, help="quality: latents per input dimension")
    p.add_argument("--eval-tokens", type=int, default=2**18)
    p.add_argument("--eval-store", default="train",
                   help="quality: evaluation tokens from: train (the training store), heldout (harvest --n-images "
                        "other shapes images, dataset seed 1), or a store path")
    p.add_argument("--seed", type=int, default=0, help="quality: training stream seed (evaluation uses seed + 1)")
    p.add_argument("--saelens-lr", default="default,visae",
                   help="quality: comma-separated SAELens LRs to train: default (3e-4), visae (visae's LR), or numbers "
                        "('': no SAELens run)")
    p.add_argument("--saelens-dead-window", type=int, default=1000,
                   help="quality: SAELens dead_feature_window in steps (its default 1000)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    args = p.parse_args()

    dl = import_dictionary_learning()
    out = {"torch": torch.__version__, "sae_lens": _version("sae-lens"),
           "dictionary_learning": dl if isinstance(dl, str) else dl[3]}
    if not args.skip_speed:
        out["speed"] = speed(args, dl)
    if not args.skip_quality:
        out["quality"] = quality(args, dl)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"[peers] wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
