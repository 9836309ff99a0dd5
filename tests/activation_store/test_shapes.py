"""The generated `shapes` source: determinism, random access, any size, and labels that match the pixels."""

import numpy as np
import pytest

from visae.activation_store.sources import open_source
from visae.activation_store.sources.shapes import COLOURS, MIN_COVER, ShapesSource


def pixels(source, i):
    return np.asarray(source[i].image)


def test_same_seed_and_index_give_the_same_image_in_any_order():
    a = open_source("shapes:n=50,seed=3,size=64")
    b = open_source("shapes:n=50,seed=3,size=64")
    for i in (49, 0, 17):
        assert np.array_equal(pixels(a, i), pixels(b, i))
        assert a.factors(i) == b.factors(i)
    assert a.fingerprint() == b.fingerprint()
    assert open_source(a.spec).fingerprint() == a.fingerprint()


def test_seed_changes_images_and_fingerprint():
    a, b = ShapesSource(n=10, seed=0), ShapesSource(n=10, seed=1)
    assert not np.array_equal(pixels(a, 0), pixels(b, 0))
    assert a.fingerprint() != b.fingerprint()


def test_the_count_does_not_change_an_index():
    """Random access: image i is a function of (seed, i) only, not of how many images the source has."""
    assert np.array_equal(pixels(ShapesSource(n=5, seed=2), 4), pixels(ShapesSource(n=5000, seed=2), 4))


@pytest.mark.parametrize("size", [16, 37, 64, 224])
def test_any_size(size):
    source = open_source(f"shapes:n=3,seed=0,size={size}")
    record = source[2]
    assert record.image is not None
    assert record.image.mode == "RGB" and record.image.size == (size, size)
    assert record.label == source.factors(2)["shape"]


def test_factors_index_into_factor_values_and_cover_every_value():
    source = ShapesSource(n=400, seed=0)
    seen = {name: set() for name in source.factor_names}
    for i in range(len(source)):
        for name, value in source.factors(i).items():
            assert 0 <= value < len(source.factor_values[name])
            seen[name].add(value)
    assert set(seen) == set(source.factor_values)
    for name, values in seen.items():
        expected = set(range(len(source.factor_values[name]))) - ({0} if name == "scale" else set())
        assert values == expected, name  # scale 0 ("tiny") is the distractors' scale only


def test_primary_object_has_the_recorded_colour_in_the_pixels():
    source = ShapesSource(n=30, seed=5)
    for i in range(len(source)):
        image, cover = source.render(i)
        inside = cover[0] == 1.0  # pixels fully covered by the primary object
        colour = np.array(list(COLOURS.values())[source.factors(i)["colour"]])
        assert inside.sum() > 20
        assert np.abs(np.asarray(image)[inside].astype(int) - colour).max() <= 1


@pytest.mark.parametrize("grid", [(8, 8), (4, 4), (7, 5)])
def test_patch_labels_match_the_rendered_pixels(grid):
    source = ShapesSource(n=40, seed=1, size=64)
    rows, cols = grid
    ys, xs = np.linspace(0, 64, rows + 1).round().astype(int), np.linspace(0, 64, cols + 1).round().astype(int)
    palette = np.array(list(COLOURS.values()))
    for i in range(len(source)):
        labels = source.patch_labels(i, grid)
        image = np.asarray(source[i].image).astype(int)
        scene = source.scene(i)
        assert set(labels) >= {"object", "shape", "colour", "scale", "orientation"}
        assert all(v.shape == grid and v.dtype == np.int16 for v in labels.values())
        for r in range(rows):
            for c in range(cols):
                patch = image[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].reshape(-1, 3)
                owner = labels["object"][r, c]
                # Saturated object colours never occur in the grey backgrounds: count pixels of each object colour.
                share = [(np.abs(patch - col).max(axis=1) <= 2).mean() for col in palette]
                if owner == -1:
                    assert labels["shape"][r, c] == -1 and labels["colour"][r, c] == -1
                    assert max(share) < MIN_COVER
                else:
                    obj = scene.objects[owner]
                    assert labels["shape"][r, c] == obj.shape and labels["colour"][r, c] == obj.colour
                    assert share[obj.colour] >= MIN_COVER * 0.5  # anti-aliased edges blend some covered pixels


def test_patch_labels_of_the_primary_object_carry_the_image_factors():
    source = ShapesSource(n=20, seed=4)
    for i in range(len(source)):
        labels, factors = source.patch_labels(i, (8, 8)), source.factors(i)
        primary = labels["object"] == 0
        assert primary.any()
        for name in ("shape", "colour", "scale", "orientation", "pos_x", "pos_y"):
            assert (labels[name][primary] == factors[name]).all()


def test_counts_match_the_objects():
    source = ShapesSource(n=60, seed=0, max_objects=3)
    for i in range(len(source)):
        assert len(source.scene(i).objects) == source.factors(i)["count"] + 1
    assert all(ShapesSource(n=20, seed=0, max_objects=1).factors(i)["count"] == 0 for i in range(20))


def test_bad_specs_say_what_to_write():
    with pytest.raises(ValueError, match="unknown shapes option"):
        open_source("shapes:n=10,colour=red")
    with pytest.raises(ValueError, match="integers"):
        open_source("shapes:n=ten")
    with pytest.raises(ValueError, match="size"):
        open_source("shapes:size=4")
    with pytest.raises(IndexError):
        ShapesSource(n=3)[3]
    with pytest.raises(ValueError, match="finer"):
        ShapesSource(n=3, size=16).patch_labels(0, (32, 32))
