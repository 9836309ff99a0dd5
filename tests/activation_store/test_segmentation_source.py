"""Images with segmentation masks (`seg:` and `ade20k:`): pooling to the patch grid, matching by name, bad masks
under the bad-files policy, and the patch labels and `segmentation` attribute a harvest stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest, scan_source
from visae.activation_store.sources import open_source
from visae.activation_store.sources.patch_grid import pool_labels, seen_square
from visae.activation_store.sources.segmentation import SegmentationSource


def open_seg(spec: str) -> SegmentationSource:
    source = open_source(spec)
    assert isinstance(source, SegmentationSource)
    return source


def write_pair(images: Path, masks: Path, name: str, mask: np.ndarray, mask_size: tuple[int, int] | None = None):
    """An RGB image and its class-index mask (optionally of another size), both named `name`."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    height, width = mask.shape
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(images / f"{name}.jpg")
    out = Image.fromarray(mask.astype(np.uint8), "L")
    (out.resize(mask_size, Image.Resampling.NEAREST) if mask_size else out).save(masks / f"{name}.png")


def quadrants(height: int, width: int, values: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.empty((height, width), np.uint8)
    h, w = height // 2, width // 2
    mask[:h, :w], mask[:h, w:], mask[h:, :w], mask[h:, w:] = values
    return mask


def test_pooling_takes_the_plurality_class_with_a_minimum_share():
    values = np.array([[0, 0, 1, 1],
                       [0, 1, 1, 2],
                       [2, 2, 3, 3],
                       [2, 3, 3, 3]])
    labelled = np.array([True, True, True, False])  # value 3 stands for "unlabelled"
    np.testing.assert_array_equal(pool_labels(values, (2, 2), 4, labelled, min_share=0.5), [[0, 1], [2, -1]])
    np.testing.assert_array_equal(pool_labels(values, (2, 2), 4, labelled, min_share=0.8), [[-1, -1], [-1, -1]])
    assert seen_square(40, 60, 1.0) == (slice(0, 40), slice(10, 50))
    assert seen_square(60, 40, 0.5) == (slice(20, 40), slice(10, 30))


def test_masks_are_matched_by_name_and_pooled_over_the_square_the_model_sees(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    write_pair(images, masks, "b", quadrants(32, 48, (0, 1, 2, 255)))  # 255: unlabelled
    write_pair(images, masks, "a", np.full((32, 32), 2))
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(masks / "0-unmatched.png")  # sorts first; no image
    source = open_seg(f"seg:{images},masks={masks},classes=3")
    assert [source[i].id for i in range(len(source))] == ["a.jpg", "b.jpg"]
    assert source.factor_values == {"class": ["0", "1", "2"]}
    assert source.segmentation == {"factor": "class", "background": None}
    np.testing.assert_array_equal(source.patch_labels(0, (2, 2))["class"], np.full((2, 2), 2))
    # b is 48 wide: the model sees its centred 32x32 square, columns 8..40
    np.testing.assert_array_equal(source.patch_labels(1, (2, 2))["class"], [[0, 1], [2, -1]])
    np.testing.assert_array_equal(source.patch_labels(1, (4, 4))["class"][:, 0], [0, 0, 2, 2])


def test_bad_masks_are_bad_files(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    write_pair(images, masks, "good", np.zeros((16, 16)))
    write_pair(images, masks, "resized", np.zeros((16, 16)), mask_size=(20, 12))
    write_pair(images, masks, "past", np.full((16, 16), 7))
    write_pair(images, masks, "missing", np.zeros((16, 16)))
    (masks / "missing.png").unlink()
    source = open_seg(f"seg:{images},masks={masks},classes=3")
    errors = {r.id: str(r.error) for r in source}
    assert errors["good.jpg"] == "None"
    assert errors["missing.jpg"].startswith("mask not found") and "by name" in errors["missing.jpg"]
    assert "is 20x12 but its image is 16x16" in errors["resized.jpg"]
    assert "class index 7, past the 3 declared classes" in errors["past.jpg"]
    table = scan_source(source, None, "skip", 2, (2, 2), progress=False)
    assert table.ids == ["good.jpg"] and {i for i, _ in table.skipped} == {"missing.jpg", "resized.jpg", "past.jpg"}
    assert table.patch_labels["class"].shape == (1, 2, 2)
    with pytest.raises(ValueError, match=r"cannot read image (missing|past|resized)\.jpg: .*--bad-files skip"):
        scan_source(source, None, "fail", 2, (2, 2), progress=False)


def test_bad_specs_say_what_to_write(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    with pytest.raises(ValueError, match="classes=N"):
        open_source(f"seg:{tmp_path}/img,masks={tmp_path}/mask")
    with pytest.raises(ValueError, match="name the image folder and the mask folder"):
        open_source(f"seg:{tmp_path}/img,classes=3")
    with pytest.raises(ValueError, match=r"unknown seg option\(s\) \['colours'\]"):
        open_source(f"seg:{tmp_path}/img,masks={tmp_path}/mask,classes=3,colours=2")
    with pytest.raises(FileNotFoundError, match="mask folder"):
        open_source(f"seg:{tmp_path}/img,masks={tmp_path}/nowhere,classes=3")


def test_ade20k_layout_shifts_classes_and_leaves_zero_unlabelled(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_pair(root / "images" / "validation", root / "annotations" / "validation", "ADE_val_00000001",
               quadrants(32, 32, (0, 1, 150, 150)))
    write_pair(root / "images" / "training", root / "annotations" / "training", "ADE_train_00000001",
               np.ones((32, 32)))
    source = open_seg(f"ade20k:{root}")
    assert len(source) == 1 and len(source.factor_values["class"]) == 150
    np.testing.assert_array_equal(source.patch_labels(0, (2, 2))["class"], [[-1, 0], [149, 149]])
    assert len(open_source(f"ade20k:{root},split=training")) == 1


def test_harvest_stores_pooled_patch_labels_and_the_segmentation(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    for k in range(3):
        write_pair(images, masks, f"im{k}", quadrants(64, 96, (k, 1, 2, 0)))
    write_pair(images, masks, "orphan", np.zeros((64, 64)))
    (masks / "orphan.png").unlink()
    store = harvest(HarvestConfig(model="visae:toy-vit-shapes", images=f"seg:{images},masks={masks},classes=3",
                                  out=str(tmp_path / "s.zarr"), hooks=["blocks.-1.resid_post"], batch_size=4,
                                  num_workers=1, progress=False, device="cpu"))
    assert store.n_images == 3 and [i for i, _ in store.skipped] == ["orphan.jpg"]
    assert store.segmentation == {"factor": "class", "background": None}
    labels = store.patch_labels["class"]
    assert labels.shape == (3, 8, 8) and labels.dtype == np.int16
    np.testing.assert_array_equal(labels[:, 0, 0], [0, 1, 2])
    np.testing.assert_array_equal(labels[:, 7, 7], [0, 0, 0])
