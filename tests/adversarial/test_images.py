"""Bounded images everywhere: a PNG of a few hundred bytes (200,000x1) or a few kilobytes (24,000,000x1) passes byte
and pixel limits, and a model resizing its shorter side would then ask for 12.8e6x64 or 1.5e9x64 pixels. Every path
refuses aspect ratios beyond 64:1 before decoding, and every resize refuses to exceed the pixel budget."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from harvest_helpers import TINY_SPEC, save_tiny_weights
from hostile import LONG_IMAGES, png_of_zeros, write_dictionary
from PIL import Image

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models.base import Preprocess
from visae.activation_store.sources.decode import read_record
from visae.service.app import create_app
from visae.service.catalog import Catalog
from visae.service.uploads import UploadLimits

MAX_ASPECT_RATIO = 64  # core.image_bounds: the limit the messages state
LONG = pytest.mark.parametrize("name, width, height", LONG_IMAGES, ids=[n for n, _, _ in LONG_IMAGES])


@LONG
def test_the_probes_pass_the_byte_and_pixel_limits(name, width, height):
    data = png_of_zeros(width, height)
    limits = UploadLimits()
    assert len(data) < 64 * 1024 < limits.max_bytes and width * height <= limits.max_pixels
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (width, height)


# -- decoding for a harvest ----------------------------------------------------------------------------------
@LONG
def test_decoding_a_file_refuses_the_aspect_ratio_before_decoding(tmp_path, name, width, height):
    path = tmp_path / name
    path.write_bytes(png_of_zeros(width, height))
    record = read_record(name, path)
    assert record.image is None
    assert record.error is not None and "aspect ratio" in record.error and f"{MAX_ASPECT_RATIO}:1" in record.error


def test_an_image_just_inside_the_limit_still_decodes(tmp_path):
    path = tmp_path / "panorama.png"
    Image.new("RGB", (MAX_ASPECT_RATIO * 4, 4), (10, 20, 30)).save(path)
    record = read_record("panorama", path)
    assert record.error is None and record.image is not None and record.image.size == (MAX_ASPECT_RATIO * 4, 4)


# -- every resize for a model ---------------------------------------------------------------------------------
@LONG
def test_the_models_resize_refuses_instead_of_allocating(name, width, height):
    preprocess = Preprocess(size=64, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.new("L", (width, height)).convert("RGB")  # already decoded, as an in-memory source would give it
    with pytest.raises(ValueError, match=r"aspect ratio.*64:1"):
        preprocess.resize_crop(image)
    with pytest.raises(ValueError, match="aspect ratio"):
        preprocess(image)


def test_the_resize_budget_holds_within_the_aspect_limit():
    """A 64:1 image is allowed, but a model input size that would blow the budget is still refused."""
    from visae.core.image_bounds import MAX_RESIZED_PIXELS, ImageBoundsError

    preprocess = Preprocess(size=1024, crop=1024, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.new("RGB", (64 * 40, 40))
    with pytest.raises(ImageBoundsError, match=f"budget is {MAX_RESIZED_PIXELS:,}"):
        preprocess.resize_crop(image)
    small = Preprocess(size=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert small.resize_crop(image).size == (32, 32)


# -- the harvest's bad-file policies --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(str(tmp_path_factory.mktemp("weights") / "tiny.safetensors"))


def long_image_folder(root):
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (60 * i, 90, 200)).save(root / cls / f"good{i}.png")
    for name, width, height in LONG_IMAGES:
        (root / "b" / name).write_bytes(png_of_zeros(width, height))
    return root


def harvest_config(weights, folder, out, bad_files: str) -> HarvestConfig:
    return HarvestConfig(model=TINY_SPEC, weights=weights, images=str(folder), out=str(out), bad_files=bad_files,
                         hooks=["blocks.-1.resid_post"], batch_size=4, num_workers=1, progress=False, device="cpu")


def test_harvest_skip_policy_records_the_long_images_as_bad_files(weights, tmp_path):
    store = harvest(harvest_config(weights, long_image_folder(tmp_path / "images"), tmp_path / "s.zarr", "skip"))
    skipped = dict(store.skipped)
    assert {key.split("/")[-1] for key in skipped} == {name for name, _, _ in LONG_IMAGES}
    assert all("aspect ratio" in reason for reason in skipped.values()), skipped
    assert store.complete and store.n_images == 4  # the good images are all there, nothing else
    assert not any("wide" in image_id for image_id in store.image_ids)


def test_harvest_fail_policy_stops_with_the_message(weights, tmp_path):
    with pytest.raises(ValueError, match=r"cannot read image .*wide-.*aspect ratio.*--bad-files skip"):
        harvest(harvest_config(weights, long_image_folder(tmp_path / "images"), tmp_path / "s.zarr", "fail"))


# -- the web service ---------------------------------------------------------------------------------------------
@pytest.fixture
def client(dictionary_dir):
    catalog = Catalog.load([("tiny", dictionary_dir)])
    return TestClient(create_app(catalog, UploadLimits()), raise_server_exceptions=False)


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status
    assert "Traceback" not in response.text
    return error


@LONG
def test_upload_api_answers_4xx_json(client, name, width, height):
    response = client.post("/api/dictionaries/tiny/encode", files={"file": (name, png_of_zeros(width, height),
                                                                            "image/png")})
    error = assert_json_error(response, 422, "extreme_aspect_ratio")
    assert f"{width}x{height}" in error["message"] and f"{MAX_ASPECT_RATIO}:1" in error["message"]
    assert client.get("/api/dictionaries").status_code == 200  # the service is still up


@LONG
def test_a_long_thumbnail_in_the_dictionary_folder_is_refused_too(tmp_path, name, width, height):
    """Files in a served folder are bounded like uploads: the encode and heatmap endpoints decode thumbnails."""
    folder = write_dictionary(tmp_path / "d")
    (folder / "eval" / "thumbs" / "1.png").write_bytes(png_of_zeros(width, height))
    client = TestClient(create_app(Catalog.load([("tiny", folder)]), UploadLimits()), raise_server_exceptions=False)
    assert_json_error(client.get("/api/dictionaries/tiny/images/1/encode"), 422, "extreme_aspect_ratio")
    assert_json_error(client.get("/api/dictionaries/tiny/features/0/top/1.png"), 422, "extreme_aspect_ratio")
    good = client.get("/api/dictionaries/tiny/features/0/top/0.png")
    assert good.status_code == 200 and good.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(good.content)) as image:
        assert image.size == (16, 16)

