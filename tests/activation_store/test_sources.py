"""Image sources: odd-but-valid files decode to RGB, broken files give an error record (never raise), folder
labels, path lists, scikit-image photos, fingerprints and spec errors. Files are generated in tmp_path."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from visae.activation_store.sources import ImageSource, decode, open_source, source_kinds
from visae.activation_store.sources.decode import read_record
from visae.activation_store.sources.skimage_photos import PHOTOS


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def decoded(path) -> Image.Image:
    record = read_record(path.name, path)
    assert record.error is None, record.error
    assert record.image is not None
    assert record.image.mode == "RGB"
    return record.image


def test_cmyk_and_greyscale_and_bilevel(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (8, 6), 77).save(tmp_path / "grey.png")
    Image.new("1", (8, 6), 1).save(tmp_path / "bilevel.png")
    red = np.asarray(decoded(tmp_path / "cmyk.jpg")).astype(int)
    assert red.shape == (6, 8, 3) and red[..., 0].min() > 200 and red[..., 1:].max() < 60
    assert (np.asarray(decoded(tmp_path / "grey.png")) == 77).all()
    assert (np.asarray(decoded(tmp_path / "bilevel.png")) == 255).all()


def test_sixteen_bit_keeps_full_range(tmp_path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.asarray(decoded(tmp_path / "deep.png"))[0, :, 0].tolist() == [0, 128, 255]


def test_alpha_and_palette_composite_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (4, 4), (0, 0, 255, 255)).save(tmp_path / "opaque.png")
    Image.new("LA", (4, 4), (0, 128)).save(tmp_path / "half.png")
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    palette.save(tmp_path / "palette_clear.png", transparency=1)
    assert (np.asarray(decoded(tmp_path / "clear.png")) == 255).all()
    assert np.asarray(decoded(tmp_path / "opaque.png"))[0, 0].tolist() == [0, 0, 255]
    assert np.asarray(decoded(tmp_path / "half.png"))[0, 0].tolist() == [127, 127, 127]
    assert np.asarray(decoded(tmp_path / "palette.png"))[0, 0].tolist() == [0, 255, 0]
    assert (np.asarray(decoded(tmp_path / "palette_clear.png")) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    (tmp_path / "rotated.jpg").write_bytes(jpeg_bytes(image, exif=exif.tobytes()))
    assert decoded(tmp_path / "rotated.jpg").size == (10, 20)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "zero-byte file"),
        ("notes.png", b"just some text, not pixels\n" * 10, "not an image"),
        ("truncated.jpg", None, "truncated or corrupt"),
        ("bomb.png", png_with_header_size(100_000, 100_000), "decompression bomb"),
        ("big.png", png_with_header_size(10_000, 10_000), "10000x10000 = 100000000 pixels exceeds the limit"),
    ],
)
def test_broken_files_give_error_records(tmp_path, name, content, reason):
    if content is None:
        whole = jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
        content = whole[: len(whole) // 2]
    (tmp_path / name).write_bytes(content)
    record = read_record(name, tmp_path / name, label=3)
    assert record.image is None and record.label == 3 and record.id == name
    assert reason in record.error


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    assert read_record("big", tmp_path / "big.png").error is None
    monkeypatch.setattr(decode, "MAX_PIXELS", 1000)
    error = read_record("big", tmp_path / "big.png").error
    assert error is not None
    assert "40x30 = 1200 pixels exceeds the limit of 1000" in error


def test_missing_file_gives_error_record(tmp_path):
    record = read_record("gone", tmp_path / "gone.png")
    assert record.error is not None
    assert record.image is None and "file not found" in record.error


@pytest.fixture
def labelled_folder(tmp_path):
    root = tmp_path / "images"
    files = {"dogs/b.png": "blue", "cats/x/a.jpg": "red", "cats/c.png": "green", "top.png": "white"}
    for path, colour in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 9), colour).save(root / path)
    (root / "dogs" / "broken.jpg").write_bytes(b"")
    (root / "README.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".thumbs" / "hidden.png")
    return root


def test_folder_labels_from_subfolders(labelled_folder):
    source = open_source(str(labelled_folder))
    assert isinstance(source, ImageSource) and source.spec == f"folder:{labelled_folder.resolve()}"
    assert source.label_names == ["cats", "dogs"]
    records = list(source)
    assert [r.id for r in records] == ["cats/c.png", "cats/x/a.jpg", "dogs/b.png", "dogs/broken.jpg", "top.png"]
    assert [r.label for r in records] == [0, 0, 1, 1, -1]
    assert records[3].image is None and records[3].error == "zero-byte file"
    assert all(r.image is not None and r.image.size == (12, 9) for r in records if r.error is None)
    assert open_source(source.spec).fingerprint() == source.fingerprint()
    assert source.factor_names == [] and source.factors(0) == {} and source.patch_labels(0, (4, 4)) is None
    with pytest.raises(IndexError, match="out of range"):
        source[5]


def test_folder_without_subfolders_has_no_labels(tmp_path):
    Image.new("RGB", (5, 5)).save(tmp_path / "a.png")
    source = open_source(f"folder:{tmp_path}")
    assert source.label_names is None and source[0].label == -1


def test_folder_fingerprint_follows_files(labelled_folder):
    before = open_source(str(labelled_folder)).fingerprint()
    assert open_source(str(labelled_folder)).fingerprint() == before
    Image.new("RGB", (3, 3)).save(labelled_folder / "dogs" / "new.png")
    added = open_source(str(labelled_folder)).fingerprint()
    assert added != before
    os.utime(labelled_folder / "top.png", ns=(1, 1))
    assert open_source(str(labelled_folder)).fingerprint() != added


def test_path_list(tmp_path, labelled_folder):
    absolute = labelled_folder / "dogs" / "b.png"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\nimages/top.png\n\n{absolute}\nimages/missing.png\n")
    source = open_source(f"list:{listing}")
    assert len(source) == 3 and source.spec == f"list:{listing.resolve()}"
    records = list(source)
    assert [r.id for r in records] == ["images/top.png", str(absolute), "images/missing.png"]
    assert records[0].image is not None and records[2].error is not None
    assert records[0].image.size == (12, 9) and records[1].error is None
    assert records[2].image is None and "file not found" in records[2].error
    assert all(r.label == -1 for r in records) and source.label_names is None
    fingerprint = source.fingerprint()
    Image.new("RGB", (3, 3)).save(labelled_folder / "missing.png")
    assert open_source(f"list:{listing}").fingerprint() != fingerprint


def test_skimage_photos_offline():
    source = open_source("skimage")
    assert len(source) == len(PHOTOS) >= 15
    records = [source[i] for i in range(len(source))]
    assert [r.id for r in records] == list(PHOTOS)
    assert all(r.error is None and r.image is not None and r.image.mode == "RGB" for r in records)
    astronaut = records[PHOTOS.index("astronaut")].image
    assert astronaut is not None and astronaut.size == (512, 512)
    assert open_source("skimage").fingerprint() == source.fingerprint()


def test_bad_source_specs(tmp_path):
    with pytest.raises(ValueError, match="unknown image source.*folder.*list.*skimage"):
        open_source(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="no image files"):
        open_source(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="one image path per line"):
        open_source(f"list:{tmp_path / 'none.txt'}")
    with pytest.raises(ValueError, match="takes no options"):
        open_source("skimage:n=3")
    assert {"folder", "list", "skimage"} <= set(source_kinds())
