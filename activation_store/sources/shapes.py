"""The `shapes` source: dSprites-style scenes generated on the fly, with ground-truth factors per image and per patch.

Every image is a pure function of (seed, index), so the source has random access and any count or size.

A scene has one *primary* object and up to ``max_objects - 1`` smaller *distractor* objects drawn beneath it and
never touching it. The image-level factors describe the primary object (plus the object count and the background),
so they are unambiguous and separable:

- ``shape``: square, ellipse, heart, triangle
- ``colour``: red, green, blue, yellow, magenta, cyan, white (saturated, always on a grey background)
- ``scale``: small, medium, large for the primary object; ``tiny`` is the distractors' scale
- ``orientation``: 3 bins of the angle *within the shape's symmetry period* (90° for a square, 180° for an ellipse,
  120° for a triangle, 360° for a heart), sampled near each bin's centre so neighbouring bins stay apart
- ``pos_x``, ``pos_y``: left/centre/right and top/middle/bottom thirds of the primary object's centre range
- ``count``: the number of objects (1..max_objects)
- ``background``: plain, gradient, stripes or noise, all in dark greys

Patch labels give, at any patch grid, the object that covers most of each patch (``object``: 0 = primary,
1.. = distractors) and that object's shape, colour, scale, orientation and position; a patch that no object covers
for at least ``MIN_COVER`` of its area is background (-1). The coverage is measured on the same supersampled masks
the image is anti-aliased from, so labels match the rendered pixels. The ``shape`` labels, background included as a
class of its own, are the source's segmentation (docs/metrics.md, "Segmentations").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from visae.activation_store.sources.base import ImageRecord, ImageSource, parse_options, register_source
from visae.activation_store.sources.patch_grid import seen_square

SHAPES = ("square", "ellipse", "heart", "triangle")
SYMMETRY_PERIOD_DEG = {"square": 90.0, "ellipse": 180.0, "heart": 360.0, "triangle": 120.0}
COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 255),
    "yellow": (240, 220, 30),
    "magenta": (230, 40, 220),
    "cyan": (30, 220, 230),
    "white": (245, 245, 245),
}
SCALES = ("tiny", "small", "medium", "large")
SCALE_RADIUS = {"tiny": 0.09, "small": 0.16, "medium": 0.22, "large": 0.28}  # circumradius / image size
ORIENTATION_BINS = 3
POSITION_BINS = ("low", "mid", "high")
POSITION_RANGE = (0.3, 0.7)  # primary centre, as a fraction of the image side
BACKGROUNDS = ("plain", "gradient", "stripes", "noise")
MIN_COVER = 0.25
SUPERSAMPLE = 4
PATCH_FACTORS = ("object", "shape", "colour", "scale", "orientation", "pos_x", "pos_y")


@dataclass(frozen=True)
class SceneObject:
    shape: int
    colour: int
    scale: int
    orientation: int
    angle_deg: float
    centre: tuple[float, float]  # (x, y) as fractions of the image side
    radius: float  # fraction of the image side

    def factors(self) -> dict[str, int]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "scale": self.scale,
            "orientation": self.orientation,
            "pos_x": position_bin(self.centre[0]),
            "pos_y": position_bin(self.centre[1]),
        }


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # primary first; drawn in reverse so the primary is on top
    background: int
    background_params: tuple[float, ...]

    def factors(self) -> dict[str, int]:
        return {**self.objects[0].factors(), "count": len(self.objects) - 1, "background": self.background}


def position_bin(fraction: float) -> int:
    lo, hi = POSITION_RANGE
    return int(np.clip((fraction - lo) / (hi - lo) * len(POSITION_BINS), 0, len(POSITION_BINS) - 1))


def unit_outline(shape: str) -> np.ndarray:
    """The outline of a shape with circumradius ~1 around the origin, as [n, 2] (x, y) points."""
    if shape == "square":
        t = np.deg2rad([45.0, 135.0, 225.0, 315.0])
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "triangle":
        t = np.deg2rad([90.0, 210.0, 330.0])
        return np.stack([np.cos(t), np.sin(t)], 1)
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    if shape == "ellipse":
        return np.stack([np.cos(t), 0.55 * np.sin(t)], 1)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([x, -y - 2.5], 1)  # image y grows downwards; centre the heart on its bounding box
    return pts / np.abs(pts).max()


_OUTLINES = {name: unit_outline(name) for name in SHAPES}


def object_polygon(obj: SceneObject, side: float) -> list[tuple[float, float]]:
    """The object's outline in pixel coordinates of an image with `side` pixels."""
    a = np.deg2rad(obj.angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = _OUTLINES[SHAPES[obj.shape]] @ rot.T * obj.radius * side + np.array(obj.centre) * side
    return [tuple(p) for p in pts]


def sample_angle(rng: np.random.Generator, shape: int, orientation: int) -> float:
    """An angle near the centre of its orientation bin (±15% of a bin), so bins stay well apart."""
    width = SYMMETRY_PERIOD_DEG[SHAPES[shape]] / ORIENTATION_BINS
    return width * (orientation + 0.5 + rng.uniform(-0.15, 0.15))


def sample_primary(rng: np.random.Generator) -> SceneObject:
    shape, orientation = int(rng.integers(len(SHAPES))), int(rng.integers(ORIENTATION_BINS))
    scale = int(rng.integers(1, len(SCALES)))
    lo, hi = POSITION_RANGE
    width = (hi - lo) / len(POSITION_BINS)

    def coordinate() -> float:
        return float(lo + width * (int(rng.integers(len(POSITION_BINS))) + 0.5 + rng.uniform(-0.3, 0.3)))

    centre = (coordinate(), coordinate())  # x then y: the draws keep their order
    return SceneObject(
        shape=shape,
        colour=int(rng.integers(len(COLOURS))),
        scale=scale,
        orientation=orientation,
        angle_deg=sample_angle(rng, shape, orientation),
        centre=centre,
        radius=SCALE_RADIUS[SCALES[scale]] * rng.uniform(0.96, 1.04),
    )


def sample_distractor(rng: np.random.Generator, placed: list[SceneObject]) -> SceneObject | None:
    """A tiny object that touches neither the image border nor any placed object, or None if none fits."""
    radius = SCALE_RADIUS["tiny"] * rng.uniform(0.9, 1.1)
    shape, orientation = int(rng.integers(len(SHAPES))), int(rng.integers(ORIENTATION_BINS))
    colour, angle = int(rng.integers(len(COLOURS))), sample_angle(rng, shape, orientation)
    for _ in range(200):
        centre = rng.uniform(radius, 1 - radius, size=2)
        if all(np.hypot(*(centre - np.array(o.centre))) > o.radius + radius + 0.03 for o in placed):
            return SceneObject(shape, colour, 0, orientation, angle, (float(centre[0]), float(centre[1])), radius)
    return None


def sample_scene(seed: int, index: int, max_objects: int) -> Scene:
    rng = np.random.default_rng([seed, index])
    objects = [sample_primary(rng)]
    wanted = int(rng.integers(1, max_objects + 1))
    while len(objects) < wanted:
        distractor = sample_distractor(rng, objects)
        if distractor is None:
            break
        objects.append(distractor)
    background = int(rng.integers(len(BACKGROUNDS)))
    return Scene(tuple(objects), background, tuple(float(v) for v in rng.uniform(0, 1, size=4)))


def render_background(kind: str, params: tuple[float, ...], size: int, seed: int, index: int) -> np.ndarray:
    """A dark-grey [size, size] float background in 0..255 (greys keep the saturated object colours apart)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    p0, p1, p2, p3 = params
    if kind == "plain":
        return np.full((size, size), 20 + 60 * p0)
    if kind == "gradient":
        a = 2 * np.pi * p0
        ramp = (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) / np.sqrt(0.5) + 0.5
        return 10 + 80 * np.clip(ramp, 0, 1)
    if kind == "stripes":
        a, period = np.pi * p0, 0.08 + 0.12 * p1
        return 45 + 35 * np.sign(np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period))
    noise_rng = np.random.default_rng([seed, index, 1])
    return noise_rng.uniform(10 + 20 * p2, 70 + 20 * p3, size=(size, size))


def coverage_masks(scene: Scene, size: int) -> np.ndarray:
    """Per object, the fraction of each output pixel it visibly covers: float [n_objects, size, size]."""
    big = size * SUPERSAMPLE
    owner = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(owner)
    for k in reversed(range(len(scene.objects))):
        draw.polygon(object_polygon(scene.objects[k], big), fill=k + 1)
    ids = np.asarray(owner)
    cover = np.stack([ids == k + 1 for k in range(len(scene.objects))]).astype(np.float32)
    return cover.reshape(len(scene.objects), size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))


def render(scene: Scene, size: int, seed: int, index: int) -> tuple[Image.Image, np.ndarray]:
    """The anti-aliased RGB image and its coverage masks."""
    bg = BACKGROUNDS[scene.background]
    pixels = np.repeat(render_background(bg, scene.background_params, size, seed, index)[..., None], 3, axis=2)
    cover = coverage_masks(scene, size)
    for obj, alpha in zip(scene.objects, cover):
        colour = np.array(list(COLOURS.values())[obj.colour], dtype=np.float64)
        pixels = pixels * (1 - alpha[..., None]) + colour * alpha[..., None]
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB"), cover


def patch_owner(cover: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The object covering most of each patch (-1 when none covers MIN_COVER of it): int16 [rows, cols]."""
    rows, cols = grid
    n, size, _ = cover.shape
    if rows <= 0 or cols <= 0:
        raise ValueError(f"patch grid must be positive, got {grid}")
    ys = np.linspace(0, size, rows + 1).round().astype(int)
    xs = np.linspace(0, size, cols + 1).round().astype(int)
    if np.any(np.diff(ys) == 0) or np.any(np.diff(xs) == 0):
        raise ValueError(f"patch grid {grid} is finer than the {size}px image; use at most {size}x{size}")
    frac = np.add.reduceat(np.add.reduceat(cover, ys[:-1], axis=1), xs[:-1], axis=2)
    frac = frac / (np.diff(ys)[None, :, None] * np.diff(xs)[None, None, :])
    best = frac.argmax(axis=0)
    return np.where(frac.max(axis=0) >= MIN_COVER, best, -1).astype(np.int16)


SPEC_DEFAULTS = {"n": 1000, "seed": 0, "size": 64, "max_objects": 3}


def parse_spec(options: str) -> dict[str, int]:
    """`n=1000,seed=0,size=64[,max_objects=3]` (the part after `shapes:`) -> keyword arguments of ShapesSource."""
    given = parse_options(options)
    unknown = sorted(set(given) - set(SPEC_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown shapes option(s) {unknown} in {options!r}; use {', '.join(SPEC_DEFAULTS)}, "
                         "e.g. 'shapes:n=1000,seed=0,size=64'")
    not_int = {k: v for k, v in given.items() if not isinstance(v, int) or isinstance(v, bool)}
    if not_int:
        raise ValueError(f"shapes options must be integers, got {not_int} in {options!r}")
    return {**SPEC_DEFAULTS, **given}


class ShapesSource(ImageSource):
    """Generated dSprites-style scenes; see the module docstring for the factors."""

    def __init__(self, n: int = 1000, seed: int = 0, size: int = 64, max_objects: int = 3):
        if n < 0:
            raise ValueError(f"shapes: n must be >= 0, got {n}")
        if size < 8:
            raise ValueError(f"shapes: size must be at least 8 pixels, got {size}")
        if not 1 <= max_objects <= 3:
            raise ValueError(f"shapes: max_objects must be 1, 2 or 3, got {max_objects}")
        self.n, self.seed, self.size, self.max_objects = n, seed, size, max_objects
        self.spec = f"shapes:n={n},seed={seed},size={size},max_objects={max_objects}"
        self.label_names = list(SHAPES)
        self.factor_values = {
            "shape": list(SHAPES),
            "colour": list(COLOURS),
            "scale": list(SCALES),
            "orientation": [f"bin{i}" for i in range(ORIENTATION_BINS)],
            "pos_x": ["left", "centre", "right"],
            "pos_y": ["top", "middle", "bottom"],
            "count": [str(k) for k in range(1, max_objects + 1)],
            "background": list(BACKGROUNDS),
        }
        self.factor_names = list(self.factor_values)
        self.segmentation = {"factor": "shape", "background": "background"}

    @classmethod
    def from_spec(cls, spec: str) -> ShapesSource:
        """From a full spec (`shapes:n=1000,seed=0,size=64`), as `open_source` would."""
        return cls(**parse_spec(spec.removeprefix("shapes").removeprefix(":")))

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        return sample_scene(self.seed, self._check_index(i), self.max_objects)

    def __getitem__(self, i: int) -> ImageRecord:
        i = self._check_index(i)
        scene = self.scene(i)
        image, _ = render(scene, self.size, self.seed, i)
        return ImageRecord(id=str(i), image=image, label=scene.objects[0].shape)

    def render(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The image and its per-object coverage masks [n_objects, size, size] (fraction of each pixel)."""
        i = self._check_index(i)
        return render(self.scene(i), self.size, self.seed, i)

    def factors(self, i: int) -> dict[str, int]:
        return self.scene(i).factors()

    def patch_labels(self, i: int, grid: tuple[int, int], crop_fraction: float = 1.0) -> dict[str, np.ndarray]:
        i = self._check_index(i)
        scene = self.scene(i)
        rows, cols = grid  # any pair (a list read from JSON too)
        seen_rows, seen_cols = seen_square(self.size, self.size, crop_fraction)
        owner = patch_owner(coverage_masks(scene, self.size)[:, seen_rows, seen_cols], (rows, cols))
        labels = {"object": owner}
        per_object = [o.factors() for o in scene.objects]
        for name in PATCH_FACTORS[1:]:
            table = np.array([f[name] for f in per_object] + [-1], dtype=np.int16)  # owner -1 -> last entry
            labels[name] = table[owner]
        return labels

    def fingerprint(self) -> str:
        return hashlib.sha256(f"visae-shapes-v1|{self.spec}".encode()).hexdigest()


@register_source("shapes")
def open_shapes(options: str) -> ShapesSource:
    return ShapesSource(**parse_spec(options))
