"""Safe image decoding, in one place: every source turns files and arrays into RGB images through here.

Odd but valid images (CMYK, 16-bit, palette, alpha, greyscale, EXIF-rotated) become upright 8-bit RGB; alpha is
composited on white. Broken files (zero bytes, not an image, truncated, absurd dimensions, an aspect ratio beyond
64:1: `core.image_bounds`) become an ImageRecord with `image=None` and a one-line `error`, never an exception.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from visae.activation_store.sources.base import ImageRecord
from visae.core.image_bounds import check_aspect_ratio

MAX_PIXELS = 89_478_485
"""Images with more pixels than this are refused as decompression bombs: PIL's own default limit, above which it
only warns (and raises at twice the limit). Checked from the header, before any pixel is decoded; no global
warnings filter is touched, so decoding is safe from many threads."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> upright 8-bit RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit int, float in [0, 1]) greyscale -> 8 bits, keeping the full range."""
    if values.dtype.kind == "f":
        return (np.clip(values, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.clip(values.astype(np.int64) // 257, 0, 255).astype(np.uint8)


def decode_file(path: str | Path) -> Image.Image:
    """Open, validate and fully decode an image file as RGB; raises ValueError with the reason if it cannot."""
    if os.path.getsize(path) == 0:
        raise ValueError("zero-byte file")
    return _decode(path)


def decode_bytes(data: bytes) -> Image.Image:
    """`decode_file` for an image held in memory (a tar member, a Parquet cell)."""
    if not data:
        raise ValueError("zero-byte image")
    return _decode(io.BytesIO(data))


def _decode(file: str | Path | io.BytesIO) -> Image.Image:
    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(
                    f"decompression bomb: {width}x{height} = {width * height} pixels exceeds the limit of {MAX_PIXELS}"
                )
            check_aspect_ratio(width, height)  # a 200,000x1 image would be resized to 200,000 times the model's size
            image.load()
            return to_rgb(image)
    except Image.UnidentifiedImageError as e:
        raise ValueError("not an image (PIL cannot identify the file format)") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"decompression bomb: {e}") from e
    except PermissionError as e:
        raise ValueError(f"cannot read the file: {e}") from e
    except (OSError, SyntaxError, EOFError) as e:
        raise ValueError(f"truncated or corrupt image: {e}") from e


def read_record(image_id: str, path: str | Path, label: int = -1) -> ImageRecord:
    """The record of one image file; a file that cannot be decoded gives image=None and the reason."""
    try:
        return ImageRecord(image_id, decode_file(path), label)
    except FileNotFoundError:
        return ImageRecord(image_id, None, label, error=f"file not found: {path}")
    except Exception as e:  # any decoder failure is data to record, never a crash
        return error_record(image_id, e, label)


def bytes_record(image_id: str, data: bytes, label: int = -1) -> ImageRecord:
    """The record of an image held in memory; bytes that cannot be decoded give image=None and the reason."""
    try:
        return ImageRecord(image_id, decode_bytes(data), label)
    except Exception as e:  # any decoder failure is data to record, never a crash
        return error_record(image_id, e, label)


def error_record(image_id: str, error: Exception, label: int = -1) -> ImageRecord:
    """A record of an image that could not be read: a ValueError's message is the reason, anything else its repr."""
    return ImageRecord(image_id, None, label, error=f"{error}" if isinstance(error, ValueError) else repr(error))


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """A numpy image (H×W grey, H×W×3 RGB or H×W×4 RGBA; bool, uint8, uint16 or float in [0, 1]) -> RGB."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f" or array.dtype == np.uint16:
        array = _to_uint8(array)
    elif array.dtype != np.uint8:
        raise ValueError(f"unsupported image array dtype {array.dtype}; use uint8, uint16, bool or float in [0, 1]")
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))
