"""Harvest throughput with 4 hook points written, against the bare forward pass (issue 2 target: >= 0.9x).

Both use the same random-init model (ViT-B/16 at 224 px by default), batch size and torch thread count, in this
one run. The harvest is end to end from a folder of JPEGs (scan, store creation, decoding threads, one forward
pass per batch, Zarr writes); the bare forward pass runs on batches already decoded in memory. Prints one JSON
object.

With `--sources`, it measures instead the harvest of the same JPEGs from three sources, interleaved round by round
(issue 15 target: each >= 0.9x the folder): the folder, WebDataset tar shards (`wds:`, 64 samples a shard) and a
Parquet dataset (`hf:`, 64 rows a file), the latter both from the `datasets` cache (prepared once before timing, as
after a first harvest) and with `streaming=true` (read in place).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.activation_store.sources import open_source

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry")


def write_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    """n photo crops of 256-320 px, as a user's image folder would hold."""
    rng = np.random.default_rng(seed)
    photos = [getattr(skdata, name)() for name in PHOTOS]
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(256, 321))
        y, x = (int(rng.integers(0, max(1, s - side))) for s in photo.shape[:2])
        crop = Image.fromarray(photo[y:y + side, x:x + side]).convert("RGB").resize((side, side))
        crop.save(folder / f"{i:05d}.jpg", quality=90)


def bare_forward(model, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(images/s, CPU seconds per image)."""
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for pixels in batches:
            model.module(pixels)
    n = sum(b.shape[0] for b in batches)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


def harvested(model, cfg: HarvestConfig) -> tuple[float, float]:
    """(images/s, CPU seconds per image), end to end."""
    start, cpu = time.perf_counter(), time.process_time()
    store = harvest(cfg, model)
    return store.n_images / (time.perf_counter() - start), (time.process_time() - cpu) / store.n_images


def write_shards(images: Path, folder: Path, per_shard: int = 64) -> str:
    """The folder's JPEGs as WebDataset shards (`NNNNN.jpg` members); returns their brace pattern."""
    files = sorted(images.iterdir())
    folder.mkdir()
    shards = range(0, len(files), per_shard)
    for shard, start in enumerate(shards):
        with tarfile.open(folder / f"shard-{shard:03d}.tar", "w") as tar:
            for path in files[start:start + per_shard]:
                tar.add(path, arcname=path.name)
    return f"wds:{folder}/shard-{{000..{len(shards) - 1:03d}}}.tar"


def write_parquet(images: Path, folder: Path, per_file: int = 64) -> str:
    """The folder's JPEGs as a Parquet dataset with an `image` column; returns its glob."""
    import datasets

    files = sorted(images.iterdir())
    dataset = datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": None} for p in files]},
                                         features=datasets.Features({"image": datasets.Image()}))
    folder.mkdir()
    for part, start in enumerate(range(0, len(files), per_file)):
        with contextlib.redirect_stderr(io.StringIO()):  # datasets' progress bar
            dataset.select(range(start, min(start + per_file, len(files)))).to_parquet(folder / f"{part:03d}.parquet")
    return f"hf:{folder}/*.parquet"


def compare_sources(args, model, hooks: list[str], tmp: Path, images: Path) -> dict:
    """Harvest images/s of each source of the same JPEGs, and each one's ratio to the folder's."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf-cache")
    parquet = write_parquet(images, tmp / "parquet")
    sources = {"folder": str(images), "wds": write_shards(images, tmp / "shards"), "parquet": parquet,
               "parquet_streaming": parquet + ",streaming=true"}
    with contextlib.redirect_stderr(io.StringIO()):
        open_source(parquet)  # converts the Parquet files into the datasets cache once, as a first harvest would
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
    for r in range(args.repeats):
        for name, spec in sources.items():
            cfg = HarvestConfig(out=str(tmp / f"{name}{r}.zarr"), model=args.model, images=spec, hooks=hooks,
                                batch_size=args.batch_size, device=args.device, progress=False)
            runs[name].append(harvested(model, cfg))
    rate = {name: float(np.median([x for x, _ in values])) for name, values in runs.items()}
    cpu = {name: float(np.median([c for _, c in values])) for name, values in runs.items()}
    others = [name for name in sources if name != "folder"]
    return {
        "bench": "harvest_sources", "model": args.model, "device": args.device,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size, "n_images": args.n_images,
        "images_per_s": {name: round(value, 3) for name, value in rate.items()},
        "ratio_to_folder": {name: round(rate[name] / rate["folder"], 3) for name in others},
        # CPU seconds per image, folder's over the source's: the contention-free view of the same ratio
        "cpu_s_per_image": {name: round(value, 4) for name, value in cpu.items()},
        "cpu_ratio_to_folder": {name: round(cpu["folder"] / cpu[name], 3) for name in others},
        "target_ratio": 0.9, "runs": {name: [round(x, 3) for x, _ in values] for name, values in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="timm:vit_base_patch16_224,pretrained=false")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sources", action="store_true", help="compare folder, wds: and hf: Parquet harvests")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    hooks = [f"blocks.{i}.resid_post" for i in np.linspace(2, model.n_blocks - 1, 4).round().astype(int)]
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        write_jpegs(images, args.n_images)
        if args.sources:
            print(json.dumps(compare_sources(args, model, hooks, Path(tmp), images)))
            return
        source = open_source(str(images))
        records = [source[i] for i in range(args.n_images)]
        pictures = [r.image for r in records if r.image is not None]
        if len(pictures) < len(records):
            raise RuntimeError(f"unreadable benchmark images: {[r.error for r in records if r.image is None]}")
        pixels = model.preprocess.batch(pictures).to(args.device)
        batches = list(torch.split(pixels, args.batch_size))
        bare_forward(model, batches[:1])  # warm-up
        forward_runs, harvest_runs = [], []
        for r in range(args.repeats):  # interleaved, so background load hits both alike
            forward_runs.append(bare_forward(model, batches))
            cfg = HarvestConfig(out=f"{tmp}/store{r}.zarr", model=args.model, images=str(images), hooks=hooks,
                                batch_size=args.batch_size, device=args.device, progress=False)
            harvest_runs.append(harvested(model, cfg))
        store_bytes = sum(f.stat().st_size for f in Path(f"{tmp}/store0.zarr").rglob("*") if f.is_file())
    (forward, forward_cpu), (harvest_rate, harvest_cpu) = np.median(forward_runs, 0), np.median(harvest_runs, 0)
    print(json.dumps({
        "bench": "harvest", "model": args.model, "device": args.device, "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "n_images": args.n_images, "hooks": hooks, "dtype": "float16",
        "forward_images_per_s": round(float(forward), 3), "harvest_images_per_s": round(float(harvest_rate), 3),
        "ratio": round(float(harvest_rate / forward), 3), "target_ratio": 0.9,
        # CPU seconds per image: on a busy machine a process with more threads gets a larger share of the
        # cores, so this ratio (forward CPU / harvest CPU) is the contention-free view of the same target
        "forward_cpu_s_per_image": round(float(forward_cpu), 3),
        "harvest_cpu_s_per_image": round(float(harvest_cpu), 3),
        "cpu_ratio": round(float(forward_cpu / harvest_cpu), 3),
        "forward_runs": [round(x, 3) for x, _ in forward_runs], "harvest_runs": [round(x, 3) for x, _ in harvest_runs],
        "store_mb": round(store_bytes / 2**20, 1),
    }))


if __name__ == "__main__":
    main()
