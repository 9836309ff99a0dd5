"""Images with segmentation masks: `seg:IMAGES,masks=MASKS,classes=N` (a folder of images and a parallel folder
of same-named PNG class-index masks) and `ade20k:ROOT,split=validation` (ADE20K / SceneParse150's layout).

Each image's mask is pooled to the model's patch grid (`patch_grid.pool_labels`) and stored as the patch-label
array `class`; the store's `segmentation` attribute names it, and `visae eval` scores dictionaries against it
(docs/metrics.md, "Segmentations"). Masks and images are matched by name, never by order. A missing mask, a mask
whose size differs from its image's, or one holding a class index past the declared classes makes the image a
bad file: skipped and recorded under `--bad-files skip`, stopping the harvest under `--bad-files fail`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from visae.activation_store.sources.base import (
    ImageRecord,
    ImageSource,
    check_options,
    register_source,
    split_location,
)
from visae.activation_store.sources.decode import read_record
from visae.activation_store.sources.folder import files_fingerprint, image_extensions
from visae.activation_store.sources.patch_grid import MIN_SHARE, pool_labels, seen_square

CLASS_FACTOR = "class"
MASK_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
SEG_OPTIONS = {"masks": None, "classes": None, "ignore": 255, "min_share": MIN_SHARE}
SEG_EXAMPLE = "seg:/data/images,masks=/data/masks,classes=21"
ADE20K_OPTIONS = {"split": "validation", "min_share": MIN_SHARE}
ADE20K_CLASSES = 150


class SegmentationSource(ImageSource):
    """Images under `images` with class-index masks at `masks/<same relative path>.png`.

    A mask pixel holding `unlabelled` is unlabelled; any other value v is class v − `first_class`, which must be
    below len(class_names).
    """

    def __init__(self, spec: str, images: Path, masks: Path, class_names: list[str], unlabelled: int,
                 first_class: int = 0, min_share: float = MIN_SHARE):
        for kind, folder in (("image", images), ("mask", masks)):
            if not folder.is_dir():
                raise FileNotFoundError(f"{kind} folder {str(folder)!r} does not exist or is not a directory")
        if not class_names:
            raise ValueError("a segmentation source needs at least one class")
        if not 0 <= min_share <= 1:
            raise ValueError(f"min_share must be in [0, 1], got {min_share}")
        self.spec, self.images, self.masks = spec, images, masks
        self.unlabelled, self.first_class, self.min_share = unlabelled, first_class, min_share
        extensions = image_extensions()
        self.paths = sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                            and not any(part.startswith(".") for part in p.relative_to(images).parts))
        if not self.paths:
            raise ValueError(f"no image files found under {str(images)!r}")
        self.factor_values = {CLASS_FACTOR: list(class_names)}
        self.segmentation = {"factor": CLASS_FACTOR, "background": None}

    def __len__(self) -> int:
        return len(self.paths)

    def mask_path(self, i: int) -> Path:
        """The mask of image i: same relative path under the mask folder, with the suffix .png."""
        return (self.masks / self.paths[self._check_index(i)].relative_to(self.images)).with_suffix(".png")

    def __getitem__(self, i: int) -> ImageRecord:
        path = self.paths[self._check_index(i)]
        record = read_record(path.relative_to(self.images).as_posix(), path)
        if record.image is None:
            return record
        try:
            self.read_mask(i, record.image.size)
        except (OSError, ValueError) as err:
            return ImageRecord(record.id, None, error=str(err))
        return record

    def read_mask(self, i: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """Class indices [H, W] (-1 = unlabelled) of image i's mask, checked against the image size (W, H) and
        the declared classes; raises ValueError naming the problem."""
        path = self.mask_path(i)
        if not path.is_file():
            raise ValueError(f"mask not found: {path} (masks are matched to images by name)")
        with Image.open(path) as mask:
            if mask.mode not in MASK_MODES:
                raise ValueError(f"mask {path} is a {mask.mode} image; masks must be single-channel PNGs of class "
                                 "indices (mode L, P or I;16)")
            if image_size is not None and mask.size != image_size:
                raise ValueError(f"mask {path} is {mask.size[0]}x{mask.size[1]} but its image is "
                                 f"{image_size[0]}x{image_size[1]}; masks must have their image's size")
            raw = np.asarray(mask).astype(np.int64)
        n_classes = len(self.factor_values[CLASS_FACTOR])
        classes = raw - self.first_class
        past = (raw != self.unlabelled) & ((classes < 0) | (classes >= n_classes))
        if past.any():
            raise ValueError(f"mask {path} holds class index {int(raw[past].max())}, past the {n_classes} declared "
                             f"classes ({self.first_class}..{self.first_class + n_classes - 1}, unlabelled = "
                             f"{self.unlabelled}); declare the right class count or fix the mask")
        return np.where(raw == self.unlabelled, -1, classes)

    def patch_labels(self, i: int, grid: tuple[int, int], crop_fraction: float = 1.0) -> dict[str, np.ndarray]:
        mask = self.read_mask(i)
        rows, cols = seen_square(mask.shape[0], mask.shape[1], crop_fraction)
        seen = mask[rows, cols]
        n_classes = len(self.factor_values[CLASS_FACTOR])
        labelled = np.arange(n_classes + 1) < n_classes  # value n_classes stands for "unlabelled"
        pooled = pool_labels(np.where(seen < 0, n_classes, seen), grid, n_classes + 1, labelled, self.min_share)
        return {CLASS_FACTOR: pooled.astype(np.int16)}

    def fingerprint(self) -> str:
        masks = [self.mask_path(i) for i in range(len(self))]
        files = files_fingerprint(self.paths, self.images) + files_fingerprint(masks, self.masks)
        return hashlib.sha256(f"visae-seg-v1|{self.spec}|{files}".encode()).hexdigest()


def class_names_of(classes, where: str) -> list[str]:
    """`classes=N` (names "0".."N-1") or `classes=FILE` (one name a line)."""
    if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1:
        return [str(c) for c in range(classes)]
    if classes is None or not Path(str(classes)).expanduser().is_file():
        raise ValueError(f"{where}: say how many classes the masks hold, classes=N (N >= 1) or classes=FILE.txt "
                         f"(one name a line), e.g. {SEG_EXAMPLE!r}")
    return [line.strip() for line in Path(str(classes)).expanduser().read_text().splitlines() if line.strip()]


@register_source("seg")
def open_segmentation(text: str) -> SegmentationSource:
    location, options = split_location(text)
    opts = check_options("seg", options, SEG_OPTIONS, SEG_EXAMPLE)
    if not location or opts["masks"] is None:
        raise ValueError(f"seg: name the image folder and the mask folder, e.g. {SEG_EXAMPLE!r}")
    images, masks = Path(location).expanduser().resolve(), Path(str(opts["masks"])).expanduser().resolve()
    names = class_names_of(opts["classes"], f"seg:{location}")
    spec = f"seg:{images},masks={masks},classes={opts['classes']},ignore={opts['ignore']},min_share={opts['min_share']}"
    return SegmentationSource(spec, images, masks, names, int(opts["ignore"]), 0, float(opts["min_share"]))


def ade20k_class_names(root: Path) -> list[str]:
    """SceneParse150's class names from ROOT/objectInfo150.txt (or .csv) when present, else "1".."150"."""
    for name, sep in (("objectInfo150.txt", "\t"), ("objectInfo150.csv", ",")):
        path = root / name
        if path.is_file():
            rows = [line.split(sep) for line in path.read_text().splitlines()[1:] if line.strip()]
            names = [row[-1].strip().split(";")[0] for row in rows]
            if len(names) == ADE20K_CLASSES:
                return names
    return [str(c) for c in range(1, ADE20K_CLASSES + 1)]


@register_source("ade20k")
def open_ade20k(text: str) -> SegmentationSource:
    """ROOT/images/SPLIT/*.jpg with ROOT/annotations/SPLIT/*.png; mask 0 = unlabelled, 1..150 = the classes."""
    location, options = split_location(text)
    opts = check_options("ade20k", options, ADE20K_OPTIONS, "ade20k:/data/ADEChallengeData2016,split=validation")
    root = Path(location).expanduser().resolve()
    split = str(opts["split"])
    spec = f"ade20k:{root},split={split},min_share={opts['min_share']}"
    return SegmentationSource(spec, root / "images" / split, root / "annotations" / split, ade20k_class_names(root),
                              unlabelled=0, first_class=1, min_share=float(opts["min_share"]))
