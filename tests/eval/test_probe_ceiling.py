"""The probe ceiling: linear probes on raw activations, and the coverage of the values they decode."""

import numpy as np
import pytest

from visae.eval.linear_probe import probe_auroc
from visae.eval.probe_ceiling import ProbeData, decodable_coverage, probe_ceiling


def labelled_rows(rng: np.random.Generator, n: int, d: int, n_values: int, signal: float):
    labels = rng.integers(-1, n_values, n)
    x = rng.normal(size=(n, d))
    for v in range(n_values):
        x[labels == v, v] += signal
    return x, labels


def test_probe_reaches_one_on_linearly_separable_values_and_chance_on_noise():
    rng = np.random.default_rng(0)
    x, y = labelled_rows(rng, 1200, 10, 3, signal=12.0)
    separable = probe_auroc(x[:600], y[:600], x[600:], y[600:], 3, strict=True)
    assert separable == pytest.approx(np.ones(3), abs=1e-3)
    x, y = labelled_rows(rng, 4000, 10, 3, signal=0.0)
    noise = probe_auroc(x[:2000], y[:2000], x[2000:], y[2000:], 3)
    assert np.all(np.abs(noise - 0.5) < 0.05)


def test_a_value_never_seen_in_training_is_nan():
    rng = np.random.default_rng(1)
    x, y = labelled_rows(rng, 400, 5, 3, signal=5.0)
    y[:200][y[:200] == 2] = 0
    assert np.isnan(probe_auroc(x[:200], y[:200], x[200:], y[200:], 3)[2])


def test_probe_ceiling_reads_patch_and_image_levels():
    rng = np.random.default_rng(2)
    n_images, grid, d = 40, 9, 6
    patch = rng.integers(-1, 2, (n_images, 3, 3))
    acts = rng.normal(size=(n_images, 1 + grid, d))  # a CLS token, then 9 patches
    acts[:, 1:, 0] += 8.0 * (patch.reshape(n_images, -1) == 0)
    acts[:, 1:, 1] += 8.0 * (patch.reshape(n_images, -1) == 1)
    count = rng.integers(0, 2, n_images)
    data = ProbeData(acts.astype(np.float32), list(range(1, 1 + grid)))
    ceiling = probe_ceiling(data, {"count": count}, {"shape": patch},
                            {"shape": ["a", "b"], "count": ["1", "2"], "absent": ["x"]})
    assert ceiling["shape"]["level"] == "patch" and ceiling["count"]["level"] == "image"
    assert min(ceiling["shape"]["probe_auroc"].values()) > 0.99
    assert max(ceiling["count"]["probe_auroc"].values()) < 0.9  # count is not in the activations
    assert "absent" not in ceiling


def test_decodable_coverage_counts_only_what_the_probe_finds():
    ceiling = {"shape": {"level": "patch", "probe_auroc": {"a": 0.99, "b": 0.95, "c": 0.6}},
               "count": {"level": "image", "probe_auroc": {"1": 0.92, "2": None}}}
    latents = {"shape": {"a": 0.97, "b": 0.7, "c": 0.95}, "count": {"1": 0.91, "2": None}}
    out = decodable_coverage(ceiling, latents)
    assert out["n_values"] == 5 and out["n_decodable"] == 3 and out["n_decodable_found"] == 2
    assert out["coverage_0_9_decodable"] == pytest.approx(2 / 3)
    assert out["missed"] == ["shape=b"]
    assert decodable_coverage({}, {})["coverage_0_9_decodable"] is None


def test_image_level_probe_reads_the_cls_token_beside_the_patches():
    """A count the model writes only into its CLS token (as the toy model's CLS heads read it) is decodable."""
    rng = np.random.default_rng(3)
    n_images, grid, d = 200, 9, 6
    acts = rng.normal(size=(n_images, 1 + grid, d))  # a CLS token, then 9 patches
    count = rng.integers(0, 2, n_images)
    acts[:, 0, 2] += 6.0 * count
    data = ProbeData(acts.astype(np.float32), list(range(1, 1 + grid)), cls_position=0)
    ceiling = probe_ceiling(data, {"count": count}, {}, {"count": ["1", "2"]})
    assert min(ceiling["count"]["probe_auroc"].values()) > 0.99
    patches_only = probe_ceiling(ProbeData(data.acts, data.patch_positions), {"count": count}, {},
                                 {"count": ["1", "2"]})
    assert max(patches_only["count"]["probe_auroc"].values()) < 0.75
