"""GPU benchmark (issue 14): prints one JSON object; every figure is a ratio of two rates measured in this run.

- `gemm_tflops` and `floor_tokens_per_s`: the bf16 GEMM rate of `x @ W` at the encoder's shapes ([batch, d] @
  [d, n]) and the sparse floor it implies, 2·d·n + 8·k·d FLOP per token (bench/train.py's definition).
- `topk` / `batchtopk` / `matryoshka` `_tokens_per_s` and `_vs_floor`: the real training step (`SAETrainer.step`:
  forward, backward, Adam, clipping, dead-latent tracking, metrics) under bf16 autocast, at d=768, n=24,576 and
  at d=1024, n=65,536 (k=32, batch 4096). Target (reported, not asserted): TopK >= 0.4x the floor.
- `loader`: the loader's device path (`ActivationLoader(device=...)`: fills staged in pinned memory, one
  non-blocking copy per fill, permutation, batching and the cast to float32 on the GPU) over a real on-disk store
  written here (float16, [n_images, 197, 768], 64-image chunks, no compression, read from the page cache), in
  steady state, against the TopK step's consumption at d=768. Target: >= 2x. The host path (today's loader,
  batches then moved to the GPU) is given beside it.
- `sweep`: 8 TopK SAEs stepped on one batch stream (`training.sweep.step_members`) against 8 separate runs of the
  same steps on the same batches, at d=768. Target: <= 0.75x the time.
- `harvest`: images/s of the harvest pipeline (decoding threads, forward pass under bf16 autocast capturing
  4 hooks, non-blocking copies to pinned memory, Zarr writes: `harvester._harvest_chunks` on a store created
  beforehand) against the bare forward pass of the same model on batches already on the GPU
  (timm `vit_base_patch16_224`, random init, 224 px, 4 hooks, bf16). Target: >= 0.9x. The end-to-end
  `harvest()` (which also scans every image once and hashes the weights) is given beside it.

GPU timings use `torch.cuda.Event`s around work already warmed up; pipelines (loader, harvest) use wall-clock
time between synchronisations. Every figure is the median of `--repeats` rounds, interleaved.

Without a CUDA GPU it exits with status 2 ("no CUDA GPU visible; run on a machine with one"). `--device cpu
--small` is a smoke run of the same code at tiny sizes (its figures mean nothing):

    python bench/gpu.py                       # on a machine with a GPU
    python bench/gpu.py --device cpu --small  # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from loader import HOOK, create_store  # bench/loader.py: the same store layout

NO_GPU_EXIT = 2
FULL = {"configs": [(768, 24576, 32), (1024, 65536, 32)], "batch": 4096, "steps": 10, "repeats": 5,
        "store_images": 4096, "loader_d": 768, "sweep_members": 8,
        "model": "timm:vit_base_patch16_224,pretrained=false", "harvest_images": 1024, "harvest_batch": 64}
SMALL = {"configs": [(64, 512, 8), (96, 1024, 8)], "batch": 256, "steps": 2, "repeats": 2,
         "store_images": 24, "loader_d": 768, "sweep_members": 8,
         "model": "timm:vit_tiny_patch16_224,pretrained=false,img_size=32,depth=4,embed_dim=64,num_heads=2",
         "harvest_images": 16, "harvest_batch": 8}
ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk")


class Clock:
    """Seconds taken by `fn()`: CUDA events on a GPU (the GPU's own time), else wall-clock time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def gpu(self, fn: Callable[[], object]) -> float:
        if not self.cuda:
            return self.wall(fn)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.sync()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    def wall(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def make_trainer(arch: str, d: int, n: int, k: int, device: torch.device, seed: int, batch: int):
    from visae.sae import SAEConfig, create_sae
    from visae.training.schedule import warmup_decay
    from visae.training.trainer import SAETrainer

    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(architecture=arch, d_in=d, d_sae=n, k=k)).to(device)
    sae.init_from_data(torch.randn(batch, d, device=device))
    return SAETrainer(sae, lr=2e-4, betas=(0.9, 0.999), grad_clip=1.0, schedule=warmup_decay(10**6, 1000, 0.05, 0.2),
                      sparsity_warmup_fraction=0.0, dead_after=10**7, autocast_dtype=torch.bfloat16)


def run_steps(trainer, batches: list[torch.Tensor]) -> None:
    for i, x in enumerate(batches):
        trainer.step(x, i + 1)


# ---------------------------------------------------------------------------------------------- SAE steps
def bench_config(d: int, n: int, k: int, p: dict, clock: Clock) -> dict:
    """GEMM rate, floor and the three architectures' step rates at one shape."""
    device, batch = clock.device, p["batch"]
    x = torch.randn(batch, d, device=device, dtype=torch.bfloat16)
    w = torch.randn(d, n, device=device, dtype=torch.bfloat16)
    data = [torch.randn(batch, d, device=device) for _ in range(p["steps"])]
    trainers = {arch: make_trainer(arch, d, n, k, device, 0, batch) for arch in ARCHITECTURES}
    for trainer in trainers.values():  # warm-up: autocast caches, cuBLAS heuristics, allocator
        run_steps(trainer, data[:2])
    for _ in range(3):
        torch.mm(x, w)
    times: dict[str, list[float]] = {name: [] for name in ("gemm", *ARCHITECTURES)}
    for _ in range(p["repeats"]):
        times["gemm"].append(clock.gpu(lambda: [x @ w for _ in range(p["steps"])]) / p["steps"])
        for arch, trainer in trainers.items():
            times[arch].append(clock.gpu(lambda t=trainer: run_steps(t, data)) / p["steps"])
    gemm_flops = 2 * batch * d * n / median(times["gemm"])
    floor = gemm_flops / (2 * d * n + 8 * k * d)
    out: dict = {"d": d, "n": n, "k": k, "batch": batch, "gemm_tflops": round(gemm_flops / 1e12, 3),
                 "flop_per_token": 2 * d * n + 8 * k * d, "floor_tokens_per_s": round(floor)}
    for arch, name in zip(ARCHITECTURES, ("topk", "batchtopk", "matryoshka")):
        rate = batch / median(times[arch])
        out[f"{name}_tokens_per_s"] = round(rate)
        out[f"{name}_vs_floor"] = round(rate / floor, 3)
    out["topk_vs_floor_target"] = ">= 0.4"
    return out


def bench_sweep(d: int, n: int, k: int, p: dict, clock: Clock) -> dict:
    """8 SAEs stepped together against 8 separate runs of the same steps on the same batches."""
    from visae.training.sweep import step_members

    device, batch, members = clock.device, p["batch"], p["sweep_members"]
    data = [torch.randn(batch, d, device=device) for _ in range(p["steps"])]
    trainers = [make_trainer("topk", d, n, k, device, i, batch) for i in range(members)]
    for trainer in trainers:
        run_steps(trainer, data[:1])
    step_members(trainers, data[0], 1)

    def together():
        for i, x in enumerate(data):
            step_members(trainers, x, i + 1)

    def separate():
        for trainer in trainers:
            run_steps(trainer, data)

    one_pass, apart = [], []
    for _ in range(p["repeats"]):
        one_pass.append(clock.gpu(together))
        apart.append(clock.gpu(separate))
    return {"members": members, "d": d, "n": n, "k": k, "steps": p["steps"],
            "one_pass_s": round(median(one_pass), 4), "separate_s": round(median(apart), 4),
            "sweep_vs_separate": round(median(one_pass) / median(apart), 3), "sweep_vs_separate_target": "<= 0.75"}


# ---------------------------------------------------------------------------------------------- loader
def write_store(path: str, n_images: int, d: int, chunk: int = 64):
    """A complete store of bench/loader.py's layout: one random chunk written into every chunk slot (the
    contents do not matter to a reader's speed)."""
    from visae.activation_store.store import ActivationStore

    store = create_store(path, n_images, d, chunk)
    block = np.random.default_rng(0).standard_normal((chunk, 197, d), dtype=np.float32).astype(np.float16)
    for k in range(store.n_chunks):
        start, stop = store.chunk_range(k)
        store.write_chunk(k, {HOOK: block[: stop - start]})
    store.mark_complete()
    return ActivationStore.open(path)


def bench_loader(p: dict, clock: Clock, work: Path, step_tokens_per_s: float) -> dict:
    """Steady-state tokens/s of the device path (and of the host path moved to the device), against the step."""
    from visae.activation_store.loader import ActivationLoader

    device, batch = clock.device, p["batch"]
    store = write_store(str(work / "loader.zarr"), p["store_images"], p["loader_d"])
    n_tokens = store.n_images * 197
    per_round = max(1, n_tokens // batch)  # about one epoch of batches a round
    device_it = iter(ActivationLoader(store, HOOK, batch_size=batch, seed=0, device=device))
    host_it = iter(ActivationLoader(store, HOOK, batch_size=batch, seed=0))

    def pull(it, to_device: bool) -> None:
        for _ in range(per_round):
            x = next(it)
            if to_device:
                x.to(device, non_blocking=True)

    pull(device_it, False)  # warm-up: first fills, pinned buffers, allocator
    pull(host_it, True)
    device_rates, host_rates = [], []
    for _ in range(p["repeats"]):
        device_rates.append(per_round * batch / clock.wall(lambda: pull(device_it, False)))
        host_rates.append(per_round * batch / clock.wall(lambda: pull(host_it, True)))
    for it in (device_it, host_it):
        it.close()  # type: ignore[attr-defined]  # a generator: stops the loader's threads
    rate, host = median(device_rates), median(host_rates)
    fill_mib = ActivationLoader(store, HOOK, batch_size=batch).fill_capacity * p["loader_d"] * 2 / 2**20
    return {"store_images": store.n_images, "tokens": n_tokens, "d": p["loader_d"], "batch": batch,
            "store_dtype": "float16", "fill_mib": round(fill_mib, 1), "fills_in_flight": 2,
            "device_tokens_per_s": round(rate), "host_path_tokens_per_s": round(host),
            "step_tokens_per_s": round(step_tokens_per_s),
            "device_vs_step": round(rate / step_tokens_per_s, 3),
            "host_path_vs_step": round(host / step_tokens_per_s, 3),
            "device_vs_step_target": ">= 2"}


# ---------------------------------------------------------------------------------------------- harvest
def write_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n photo crops of 256-320 px, as a user's image folder would hold."""
    from PIL import Image
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    photos = [getattr(skdata, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "cat")]
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(256, 321))
        y, x = (int(rng.integers(0, max(1, s - side))) for s in photo.shape[:2])
        Image.fromarray(photo[y:y + side, x:x + side]).convert("RGB").save(folder / f"{i:05d}.jpg", quality=90)


def bench_harvest(p: dict, clock: Clock, work: Path, workers: int) -> dict:
    from visae.activation_store.harvest_config import HarvestConfig
    from visae.activation_store.harvester import _harvest_chunks, harvest, open_or_create, store_attrs
    from visae.activation_store.models import load_model
    from visae.activation_store.sources import open_source

    device = clock.device
    model = load_model(p["model"], device=str(device))
    hooks = list(dict.fromkeys(f"blocks.{i}.resid_post"
                               for i in np.linspace(2 if model.n_blocks > 4 else 0, model.n_blocks - 1, 4)
                               .round().astype(int)))
    images = work / "images"
    images.mkdir()
    write_jpegs(images, p["harvest_images"])
    cfg = HarvestConfig(out=str(work / "harvest.zarr"), model=p["model"], images=str(images), hooks=hooks,
                        batch_size=p["harvest_batch"], dtype="bfloat16", device=str(device), num_workers=workers,
                        progress=False)
    source = open_source(cfg.images)
    token_index = model.layout.indices(cfg.tokens)
    store = open_or_create(cfg, store_attrs(cfg, model, source, hooks, token_index), model, source, hooks)
    chunks = list(range(store.n_chunks))
    pictures = [image for i in store.source_index if (image := source[int(i)].image) is not None]
    if len(pictures) != store.n_images:
        raise RuntimeError("a benchmark image could not be read back")
    pixels = [model.preprocess.batch(pictures[start:stop]).to(device) for start, stop in map(store.chunk_range, chunks)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def bare() -> None:
        with torch.no_grad(), autocast:
            for batch in pixels:
                model.module(batch)

    def pipeline() -> None:
        _harvest_chunks(model, source, store, chunks, hooks, token_index, cfg, show=False)

    bare()
    pipeline()  # warm-up (also writes every chunk once)
    forward_rates, harvest_rates = [], []
    for _ in range(p["repeats"]):
        forward_rates.append(store.n_images / clock.gpu(bare))
        harvest_rates.append(store.n_images / clock.wall(pipeline))
    end_to_end = store.n_images / clock.wall(lambda: harvest(replace(cfg, out=str(work / "harvest_e2e.zarr")), model))
    forward, harvested = median(forward_rates), median(harvest_rates)
    return {"model": p["model"], "hooks": hooks, "dtype": "bfloat16", "n_images": store.n_images,
            "batch": p["harvest_batch"], "decode_threads": workers,
            "forward_images_per_s": round(forward, 1), "harvest_images_per_s": round(harvested, 1),
            "harvest_vs_forward": round(harvested / forward, 3), "harvest_vs_forward_target": ">= 0.9",
            "harvest_end_to_end_images_per_s": round(end_to_end, 1)}


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke run; use with --small)")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke run of every measurement")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds; figures are medians")
    parser.add_argument("--steps", type=int, default=None, help="training steps per timed round")
    parser.add_argument("--harvest-workers", type=int, default=min(16, os.cpu_count() or 4),
                        help="image-decoding threads of the harvest")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: steps, loader, sweep, harvest")
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU visible; run on a machine with one "
              "(or `--device cpu --small` for a smoke run of the code)", file=sys.stderr)
        return NO_GPU_EXIT
    from visae.core.devices import resolve_device

    device = resolve_device(args.device)
    p = dict(SMALL if args.small else FULL)
    p["repeats"] = args.repeats or p["repeats"]
    p["steps"] = args.steps or p["steps"]
    skip = {s for s in args.skip.split(",") if s}
    clock = Clock(device)
    out: dict = {"bench": "gpu", "device": str(device),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "small": args.small, "dtype": "bfloat16", "steps": p["steps"], "repeats": p["repeats"],
                 "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="visae-bench-gpu-") as tmp:
        work = Path(tmp)
        if "steps" not in skip:
            out["steps_by_shape"] = []
            for d, n, k in p["configs"]:
                out["steps_by_shape"].append(bench_config(d, n, k, p, clock))
                release(device)  # the trainers of one shape are gone before the next shape's are made
        if "loader" not in skip:
            d, n, k = p["configs"][0]
            step = (out["steps_by_shape"][0]["topk_tokens_per_s"] if "steps_by_shape" in out
                    else bench_config(d, n, k, p, clock)["topk_tokens_per_s"])
            out["loader"] = bench_loader(p, clock, work, step)
        if "sweep" not in skip:
            d, n, k = p["configs"][0]
            out["sweep"] = bench_sweep(d, n, k, p, clock)
            release(device)
        if "harvest" not in skip:
            out["harvest"] = bench_harvest(p, clock, work, args.harvest_workers)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
