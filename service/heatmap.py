"""Patch heatmaps drawn over images, rendered server-side to PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

_COLORMAP = colormaps["inferno"]


def overlay(image: Image.Image, heat: np.ndarray, vmax: float) -> Image.Image:
    """Blend a [rows, cols] activation map over `image`; opacity grows with activation / vmax."""
    scaled = np.clip(np.nan_to_num(heat.astype(np.float32)) / max(float(vmax), 1e-12), 0.0, 1.0)
    small = Image.fromarray((scaled * 255).astype(np.uint8), mode="L")
    level = np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    colour = _COLORMAP(level)[..., :3]
    alpha = (0.15 + 0.65 * level)[..., None]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = base * (1 - alpha) * (0.55 + 0.45 * level[..., None]) + colour * alpha
    return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
