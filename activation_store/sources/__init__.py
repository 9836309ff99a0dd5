"""Image sources behind one interface (ImageSource), opened from a spec string with open_source."""

from visae.activation_store.sources import folder, path_list, shapes, skimage_photos
from visae.activation_store.sources.base import ImageRecord, ImageSource, open_source, register_source, source_kinds

__all__ = ["ImageRecord", "ImageSource", "folder", "open_source", "path_list", "register_source", "shapes",
           "skimage_photos", "source_kinds"]
