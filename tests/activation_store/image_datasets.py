"""Small real datasets for the hf: and wds: sources: WebDataset tar shards written with `tarfile`, and Hugging Face
datasets (Arrow via save_to_disk, Parquet via to_parquet) with a ClassLabel, all holding the same `shapes` images,
plus the broken members and cells a real corpus has."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from visae.activation_store.sources.shapes import SHAPES, ShapesSource


def shapes_images(n: int, size: int = 32) -> list[tuple[bytes, int]]:
    """(PNG bytes, label) of the first n `shapes` images: varied pictures, labelled by their shape."""
    source, images = ShapesSource(n=n, seed=0, size=size), []
    for i in range(n):
        record = source[i]
        assert record.image is not None
        images.append((encode(record.image), record.label))
    return images


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def odd_and_bad_images() -> dict[str, bytes]:
    """Odd images that are converted (CMYK, 16-bit) and bad ones that are skipped, by name."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    return {
        "cmyk": encode(Image.new("CMYK", (32, 32), (0, 100, 0, 0)), "JPEG"),
        "sixteen_bit": encode(Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16))),
        "truncated": encode(noise, "JPEG")[:600],
        "not_an_image": b"a caption, not an image",
        "bomb": encode(Image.new("1", (20000, 20000))),
    }


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, images: list[tuple[bytes, int]], per_shard: int, name: str = "shard") -> list[Path]:
    """WebDataset shards `name-000.tar`, ...: sample `NNNNNN` has `NNNNNN.png`, `.cls` and a `.json` with the label."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(images), per_shard)):
        paths.append(folder / f"{name}-{shard:03d}.tar")
        with tarfile.open(paths[-1], "w") as tar:
            for i, (png, label) in enumerate(images[start:start + per_shard], start):
                add_member(tar, f"{i:06d}.png", png)
                add_member(tar, f"{i:06d}.cls", str(label).encode())
                add_member(tar, f"{i:06d}.json", json.dumps({"label": label, "caption": "a shape"}).encode())
    return paths


def write_bad_shard(path: Path, good: list[tuple[bytes, int]]) -> None:
    """A shard of good samples among odd and bad ones, a sample without an image, names that point outside the
    shard (absolute, `..`), a directory and a link member."""
    with tarfile.open(path, "w") as tar:
        add_member(tar, "good/a.png", good[0][0])
        add_member(tar, "good/a.cls", str(good[0][1]).encode())
        for name, data in odd_and_bad_images().items():
            add_member(tar, f"odd/{name}.png", data)
        add_member(tar, "no_image.cls", b"1")
        add_member(tar, "/abs/escape.png", good[1][0])
        add_member(tar, "../up/escape.png", good[2][0])
        directory = tarfile.TarInfo("folder")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        link = tarfile.TarInfo("link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def image_dataset(images: list[tuple[bytes, int]]):
    """A `datasets.Dataset` with an `image` column and a ClassLabel `label` column (the shape names)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(SHAPES))})
    rows = {"image": [{"bytes": png, "path": None} for png, _ in images], "label": [label for _, label in images]}
    return datasets.Dataset.from_dict(rows, features=features)


def write_parquet(folder: Path, images: list[tuple[bytes, int]], per_file: int) -> str:
    """The dataset as Parquet files `part-NNN.parquet` in `folder`; returns their glob."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = image_dataset(images)
    for part, start in enumerate(range(0, len(images), per_file)):
        dataset.select(range(start, min(start + per_file, len(images)))).to_parquet(folder / f"part-{part:03d}.parquet")
    return str(folder / "part-*.parquet")
