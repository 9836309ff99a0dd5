"""Bounds on an image's geometry, checked by every decoder before any pixel is decoded and again by every resize
before it allocates: a few-hundred-byte PNG of 200,000x1 passes any byte or pixel limit, yet resizing its shorter
side to a model's input size would ask for billions of pixels.

- MAX_ASPECT_RATIO: images longer than 64:1 (either way) are refused. No photograph or scan is; a model that
  resizes the shorter side and centre-crops would see a sliver of such an image anyway.
- MAX_RESIZED_PIXELS: no resize may produce more than 2^25 (about 33.5 million) pixels, 96 MiB as 8-bit RGB.
"""

from __future__ import annotations

MAX_ASPECT_RATIO = 64
MAX_RESIZED_PIXELS = 2**25


class ImageBoundsError(ValueError):
    """An image whose geometry is refused (extreme aspect ratio, or a resize over the pixel budget)."""


def check_aspect_ratio(width: int, height: int) -> None:
    """Refuse an empty image or one longer than `MAX_ASPECT_RATIO`:1 in either direction."""
    if width <= 0 or height <= 0:
        raise ImageBoundsError(f"the image is {width}x{height}: it has no pixels")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageBoundsError(f"extreme aspect ratio: the image is {width}x{height} ({ratio:,.0f}:1); images "
                               f"longer than {MAX_ASPECT_RATIO}:1 are refused")


def check_resize(width: int, height: int, new_width: int, new_height: int) -> None:
    """Refuse a resize of a `width`x`height` image whose result would exceed `MAX_RESIZED_PIXELS`."""
    check_aspect_ratio(width, height)
    if new_width * new_height > MAX_RESIZED_PIXELS:
        raise ImageBoundsError(f"resizing the {width}x{height} image to {new_width}x{new_height} would make "
                               f"{new_width * new_height:,} pixels; the budget is {MAX_RESIZED_PIXELS:,}")
