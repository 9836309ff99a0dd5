"""The sample photographs scikit-image ships (`skimage`): offline, fixed, 18 images of varied content."""

from __future__ import annotations

import hashlib

import skimage
import skimage.data

from visae.activation_store.sources.base import ImageRecord, ImageSource, register_source
from visae.activation_store.sources.decode import array_to_rgb

PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket", "text",
)


class SkimagePhotos(ImageSource):
    """Each photo's id is its skimage.data name; greyscale photos are converted to RGB."""

    spec = "skimage"

    def __len__(self) -> int:
        return len(PHOTOS)

    def __getitem__(self, i: int) -> ImageRecord:
        name = PHOTOS[self._check_index(i)]
        try:
            return ImageRecord(name, array_to_rgb(getattr(skimage.data, name)()))
        except Exception as e:  # a missing data file is data to record, never a crash
            return ImageRecord(name, None, error=f"cannot load skimage.data.{name}: {e!r}")

    def fingerprint(self) -> str:
        version = skimage.__version__  # pyright: ignore[reportAttributeAccessIssue]  # missing from skimage's .pyi
        return hashlib.sha256(f"skimage {version} {','.join(PHOTOS)}".encode()).hexdigest()


@register_source("skimage")
def open_skimage(options: str) -> SkimagePhotos:
    if options:
        raise ValueError(f"the skimage source takes no options, got {options!r}; write just 'skimage'")
    return SkimagePhotos()
