"""Image sources behind one interface (ImageSource), opened from a spec string with open_source."""

from visae.activation_store.sources import folder, hf, path_list, segmentation, shapes, skimage_photos, webdataset
from visae.activation_store.sources.base import ImageRecord, ImageSource, open_source, register_source, source_kinds

__all__ = ["ImageRecord", "ImageSource", "folder", "hf", "open_source", "path_list", "register_source", "segmentation",
           "shapes", "skimage_photos", "source_kinds", "webdataset"]
