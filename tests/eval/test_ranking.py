"""The ranking: ground-truth score, label-free score, minimum support, and the check against the ground truth."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from visae.eval.monosemanticity import baseline_ms, monosemanticity_scores
from visae.eval.ranking import MIN_IMAGES, add_score_and_rank
from visae.eval.ranking_validation import ranking_validation
from visae.eval.spatial_coherence import moran_i


def table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"feature": np.arange(n), "freq": rng.uniform(1e-3, 0.05, n),
                         "n_images_fired": rng.integers(MIN_IMAGES, 500, n), "best_auroc": rng.uniform(0.5, 1.0, n),
                         "moran_i": rng.uniform(-0.1, 0.8, n), "monosemanticity": rng.uniform(0.2, 0.9, n)})


def test_components_are_normalised_as_documented():
    features = pd.DataFrame({"feature": [0, 1], "freq": [0.1, 10**-0.5], "n_images_fired": [50, 50],
                             "best_auroc": [1.0, 0.75], "moran_i": [0.6, -0.2], "monosemanticity": [0.8, 0.4]})
    out = add_score_and_rank(features, ms_baseline=0.6)
    assert out["c_auroc"].tolist() == pytest.approx([1.0, 0.5])
    assert out["c_coherence"].tolist() == pytest.approx([0.6, 0.0])
    assert out["c_mono"].tolist() == pytest.approx([0.5, 0.0])  # (MS - MS0) / (1 - MS0), clipped
    assert out["c_density"].tolist() == pytest.approx([1.0, 0.5])
    assert out["score_label_free"].tolist() == pytest.approx([(0.6 + 0.5 + 1) / 3, 0.5 / 3])
    assert out["score"].tolist() == pytest.approx([1.0, 0.5])  # ground truth where there is one
    no_truth = add_score_and_rank(features.drop(columns="best_auroc"), ms_baseline=0.6)
    assert no_truth["score"].tolist() == pytest.approx(no_truth["score_label_free"].tolist())


def test_a_latent_on_too_few_images_never_enters_the_top_100():
    rng = np.random.default_rng(0)
    features = table(300, rng)
    rare = [3, 77, 150]
    features.loc[rare, ["n_images_fired", "best_auroc", "moran_i", "monosemanticity"]] = [MIN_IMAGES - 1, 1, 1, 1]
    features.loc[5, "freq"] = 0.0  # dead
    out = add_score_and_rank(features)
    assert out.loc[rare + [5], ["score", "score_label_free"]].isna().all().all()
    assert (out.loc[rare + [5], "rank"] > 100).all() and (out.loc[rare + [5], "rank_label_free"] > 100).all()
    assert sorted(out["rank"]) == list(range(1, 301))


def test_baseline_ms_is_the_score_of_a_latent_firing_everywhere():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 8)) + 2.0
    uniform = monosemanticity_scores(sp.csr_matrix(np.r_[np.ones((39, 1)), np.zeros((1, 1))] * [1.0, 0.5]), emb)
    # a latent at 1 on 39 images, 0 on the last: MS over those 39 equals the baseline of those 39 embeddings
    assert uniform[0] == pytest.approx(baseline_ms(emb[:39]))


def planted_codes(rng: np.random.Generator, n_images: int = 60, grid: tuple[int, int] = (6, 6)) -> sp.csc_matrix:
    """Latent 0 fires on a 3x3 block of every image (spatially coherent); latents 1-4 fire on random patches."""
    rows, cols = grid
    codes = np.zeros((n_images, rows, cols, 5))
    for i in range(n_images):
        r, c = rng.integers(0, rows - 2), rng.integers(0, cols - 2)
        codes[i, r:r + 3, c:c + 3, 0] = rng.uniform(1, 2)
    codes[..., 1:] = rng.uniform(0, 2, codes[..., 1:].shape) * (rng.random(codes[..., 1:].shape) < 0.25)
    return sp.csc_matrix(codes.reshape(-1, 5))


def test_label_free_score_ranks_a_planted_coherent_latent_above_noise():
    rng = np.random.default_rng(2)
    codes = planted_codes(rng)
    coherence = moran_i(codes, (6, 6))
    assert coherence[0] > 0.4 and np.all(np.abs(coherence[1:]) < 0.1)
    features = pd.DataFrame({"feature": np.arange(5), "freq": np.full(5, 0.05), "n_images_fired": np.full(5, 60),
                             "moran_i": coherence, "monosemanticity": np.full(5, np.nan)})
    out = add_score_and_rank(features)
    assert out.loc[0, "rank_label_free"] == 1


def test_ranking_validation_reports_top_share_and_base_rate():
    rng = np.random.default_rng(3)
    features = add_score_and_rank(table(400, rng))
    check = ranking_validation(features)
    assert check is not None
    detector = features["best_auroc"] >= 0.9
    assert check["base_rate_live"] == pytest.approx(detector.mean())
    assert check["rank_top_detector_share"] == 1.0  # the ground-truth rank puts detectors first
    assert check["rank_label_free_enrichment"] == pytest.approx(check["rank_label_free_top_detector_share"]
                                                                / check["base_rate_live"])
    assert ranking_validation(features.drop(columns="best_auroc")) is None
