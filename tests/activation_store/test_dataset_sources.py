"""The hf: and wds: sources on real data: tar shards written with tarfile, Arrow and Parquet datasets written with
`datasets`, harvested in this process with a tiny ViT."""

import tarfile

import numpy as np
import pytest
from harvest_helpers import TINY_SPEC, save_tiny_weights
from image_datasets import (
    add_member,
    encode,
    image_dataset,
    shapes_images,
    write_bad_shard,
    write_parquet,
    write_shards,
)
from PIL import Image

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import Preprocess
from visae.activation_store.sources import open_source, webdataset
from visae.activation_store.sources.shapes import SHAPES
from visae.activation_store.store import ActivationStore
from visae.eval.evaluate import SourceImages

pytestmark = pytest.mark.timeout(120)
N = 12


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(str(tmp_path_factory.mktemp("weights") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def images():
    return shapes_images(N)


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def config(weights, out, images, **kw) -> HarvestConfig:
    return HarvestConfig(**{**dict(model=TINY_SPEC, weights=weights, images=images, out=str(out), batch_size=4,
                                   hooks=["blocks.-1.resid_post"], num_workers=2, progress=False, device="cpu"), **kw})


def test_wds_shards_give_ids_and_labels_and_the_same_activations_as_a_folder(weights, images, tmp_path):
    write_shards(tmp_path / "shards", images, per_shard=5)
    spec = f"wds:{tmp_path}/shards/shard-{{000..002}}.tar,label=cls"
    store = harvest(config(weights, tmp_path / "wds.zarr", spec))
    assert store.complete and store.n_images == N and not store.skipped
    assert list(store.image_ids[:6]) == [f"shard-000.tar/{i:06d}" for i in range(5)] + ["shard-001.tar/000005"]
    assert store.labels.tolist() == [label for _, label in images]
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, (png, _) in enumerate(images):
        (folder / f"{i:06d}.png").write_bytes(png)
    reference = harvest(config(weights, tmp_path / "folder.zarr", str(folder)))
    np.testing.assert_array_equal(store.acts("blocks.2.resid_post")[:], reference.acts("blocks.2.resid_post")[:])

    json_labels = open_source(f"wds:{tmp_path}/shards/shard-*.tar,image=png,label=json:label")
    assert [json_labels[i].label for i in range(N)] == store.labels.tolist()


def test_wds_bad_members_are_skipped_and_recorded_and_nothing_is_extracted(weights, images, tmp_path, monkeypatch):
    write_shards(tmp_path / "shards", images[:4], per_shard=4)
    write_bad_shard(tmp_path / "shards" / "shard-001.tar", images)
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with tarfile.open(tmp_path / "shards" / "shard-002.tar", "w") as tar:
        add_member(tar, "huge.png", encode(Image.fromarray(noise)))  # a valid image of 49 KB, over the limit
    monkeypatch.setattr(webdataset, "MAX_MEMBER_BYTES", 30_000)
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    store = harvest(config(weights, tmp_path / "s.zarr", f"wds:{tmp_path}/shards/shard-*.tar,label=cls"))
    skipped = dict(store.skipped)
    assert set(skipped) == {f"shard-001.tar/odd/{n}" for n in ("truncated", "not_an_image", "bomb")} | {
        "shard-001.tar/no_image", "shard-002.tar/huge"}
    assert "no image in the sample" in skipped["shard-001.tar/no_image"]
    assert "decompression bomb" in skipped["shard-001.tar/odd/bomb"]
    assert "decompression bomb: the png member declares" in skipped["shard-002.tar/huge"]
    # the odd images are converted; names pointing outside the shard are only keys
    assert list(store.image_ids[4:]) == ["shard-001.tar/good/a", "shard-001.tar/odd/cmyk",
                                         "shard-001.tar/odd/sixteen_bit", "shard-001.tar//abs/escape",
                                         "shard-001.tar/../up/escape"]
    assert store.labels.tolist()[4:] == [images[0][1], -1, -1, -1, -1]
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before and not (tmp_path / "up").exists()

    with pytest.raises(ValueError, match=r"cannot read image shard-001.tar/odd/truncated.*--bad-files skip"):
        harvest(config(weights, tmp_path / "f.zarr", f"wds:{tmp_path}/shards/shard-*.tar", bad_files="fail"))


def test_wds_broken_shards_are_recorded_not_raised(images, tmp_path):
    paths = write_shards(tmp_path, images[:6], per_shard=3)
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:len(data) // 2])  # cut inside a member
    paths[1].write_bytes(b"\x00" * 512 + b"garbage that is not a tar header" * 40)
    source = open_source(f"wds:{tmp_path}/shard-*.tar")
    records = [source[i] for i in range(len(source))]
    errors = [r.error for r in records if r.error]
    assert any("truncated shard" in e or "unreadable tar data" in e for e in errors)
    assert any(r.id == "shard-001.tar" and "unreadable tar data" in str(r.error) for r in records)


def test_wds_rerun_against_changed_shards_is_refused(weights, images, tmp_path):
    paths = write_shards(tmp_path / "shards", images, per_shard=6)
    cfg = config(weights, tmp_path / "s.zarr", f"wds:{tmp_path}/shards/shard-{{000..001}}.tar", n_images=8)
    assert harvest(cfg).n_images == 8
    write_shards(tmp_path / "shards", images[::-1], per_shard=6)
    assert paths[0].stat().st_size > 0
    with pytest.raises(ValueError, match="refusing to resume.*source"):
        harvest(cfg)


@pytest.mark.parametrize("layout", ["arrow", "parquet", "parquet-streaming", "dataset-dict"])
def test_hf_datasets_give_class_names_labels_and_split_ids(weights, images, tmp_path, layout):
    bad = [(b"not an image", 0)]
    rows = images[:5] + bad + images[5:]
    if layout == "arrow":
        image_dataset(rows).save_to_disk(str(tmp_path / "arrow"))
        spec, split = f"hf:{tmp_path}/arrow", "train"
    elif layout == "dataset-dict":
        import datasets

        datasets.DatasetDict({"train": image_dataset(images[:2]), "validation": image_dataset(rows)}).save_to_disk(
            str(tmp_path / "dict"))
        spec, split = f"hf:{tmp_path}/dict,split=validation", "validation"
    else:
        spec = f"hf:{write_parquet(tmp_path / 'pq', rows, per_file=5)}"
        spec, split = spec + (",streaming=true" if layout == "parquet-streaming" else ""), "train"
    store = harvest(config(weights, tmp_path / "s.zarr", spec))
    assert store.complete and store.n_images == N and store.label_names == list(SHAPES)
    assert store.skipped == [(f"{split}/5", "not an image (PIL cannot identify the file format)")]
    assert list(store.image_ids[4:7]) == [f"{split}/4", f"{split}/6", f"{split}/7"]
    assert store.labels.tolist() == [label for _, label in images]
    assert store.source_index.tolist() == [i for i in range(N + 1) if i != 5]


def test_hf_missing_split_or_column_is_refused_naming_the_ones_there(images, tmp_path):
    import datasets

    datasets.DatasetDict({"train": image_dataset(images[:2]), "test": image_dataset(images[2:4])}).save_to_disk(
        str(tmp_path / "dict"))
    parquet = write_parquet(tmp_path / "pq", images[:4], per_file=4)
    for spec, message in [(f"hf:{tmp_path}/dict", "has several splits; choose one of train, test"),
                          (f"hf:{tmp_path}/dict,split=validation", "no split 'validation'; choose one of train, test"),
                          (f"hf:{parquet},split=validation", "no split 'validation'; choose one of train"),
                          (f"hf:{parquet},image=img", "no image column 'img'; its columns are image, label"),
                          (f"hf:{parquet},label=class", "no label column 'class'; its columns are image, label"),
                          (f"hf:{parquet},shuffle=true", r"unknown hf option\(s\) \['shuffle'\]"),
                          (f"wds:{tmp_path}/none-{{0..2}}.tar", "no WebDataset shard at .*none-0.tar")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            open_source(spec)


def test_hf_fingerprint_follows_the_data_and_the_options(images, tmp_path):
    parquet = write_parquet(tmp_path / "pq", images[:4], per_file=2)
    fingerprint = open_source(f"hf:{parquet}").fingerprint()
    assert open_source(f"hf:{parquet}").fingerprint() == fingerprint
    assert open_source(f"hf:{parquet},label=label").fingerprint() == fingerprint  # the default, spelt out
    streaming = open_source(f"hf:{parquet},streaming=true").fingerprint()
    write_parquet(tmp_path / "pq", images[4:8], per_file=2)
    assert open_source(f"hf:{parquet}").fingerprint() != fingerprint
    assert open_source(f"hf:{parquet},streaming=true").fingerprint() != streaming


def test_eval_reads_images_back_by_their_recorded_id_and_says_when_the_source_is_gone(weights, images, tmp_path):
    paths = write_shards(tmp_path / "shards", images, per_shard=5)
    store = harvest(config(weights, tmp_path / "s.zarr", f"wds:{tmp_path}/shards/shard-*.tar"))
    preprocess = Preprocess.from_dict(store.attrs["preprocess"])
    read_back = SourceImages(store, N, preprocess)
    np.testing.assert_array_equal(np.asarray(read_back.image(7)), np.asarray(open_source(store.source_spec)[7].image))
    assert read_back.thumb(11).size[0] > 0

    paths[0].unlink()  # the glob now finds two shards: image 2 of the source is another sample
    with pytest.raises(ValueError, match="image 2 of the store is shard-000.tar/000002, but .* now holds "
                                         "shard-001.tar/000007 there: the source changed"):
        SourceImages(ActivationStore.open(store.path), N, preprocess).image(2)
    for path in paths[1:]:
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"cannot be read back: its image source wds:.* is gone \(no WebDat"):
        SourceImages(ActivationStore.open(store.path), N, preprocess)
