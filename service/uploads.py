"""Safe decoding of uploaded images: byte and pixel limits, decompression bombs and aspect ratios beyond 64:1
(`core.image_bounds`) refused, image formats only."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from visae.core.image_bounds import ImageBoundsError, check_aspect_ratio
from visae.service.errors import ApiError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 24_000_000


def decode_upload(data: bytes, content_type: str | None, limits: UploadLimits) -> Image.Image:
    """Decode an uploaded image to RGB, checking size and type before any pixel is decoded."""
    if not data:
        raise ApiError(400, "empty_upload", "the uploaded file is empty; send an image file in the `file` field")
    if len(data) > limits.max_bytes:
        raise ApiError(413, "too_large", f"upload is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    if content_type and not content_type.startswith("image/") and content_type != "application/octet-stream":
        raise ApiError(415, "unsupported_media_type",
                       f"content type {content_type!r} is not an image; send PNG, JPEG, WebP, GIF or BMP")
    image = _open_header(data)
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ApiError(413, "too_many_pixels",
                       f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    try:
        check_aspect_ratio(width, height)
    except ImageBoundsError as err:
        raise ApiError(422, "extreme_aspect_ratio", str(err)) from None
    return _decode_rgb(image)


def _open_header(data: bytes) -> Image.Image:
    """Read only the header: the format and the declared size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ApiError(413, "decompression_bomb", f"refused a decompression bomb: {err}") from None
    except Exception:
        raise ApiError(415, "unsupported_media_type",
                       "the file is not a readable image; send PNG, JPEG, WebP, GIF or BMP") from None
    return image


def _decode_rgb(image: Image.Image) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ApiError(413, "decompression_bomb", f"refused a decompression bomb: {err}") from None
    except Exception as err:
        raise ApiError(400, "broken_image", f"the image could not be decoded ({err}); is the file truncated?") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
