"""Hand-computed checks of every evaluation metric (docs/metrics.md) on tiny cases."""

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from visae.core.reconstruction import ReconstructionStats
from visae.eval.auroc import auroc_matrix, best_matches, coverage
from visae.eval.labels import purity_and_entropy
from visae.eval.monosemanticity import monosemanticity_scores
from visae.eval.sparsity import FiringStats


def test_fvu_uses_per_dimension_mean_and_centring():
    # Dimension 0 has mean 10, dimension 1 has mean -10: a scalar mean (0) or no centring inflates the denominator.
    x = torch.tensor([[9.0, -11.0], [11.0, -9.0], [10.0, -12.0], [10.0, -8.0]])
    x_hat = x + torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    stats = ReconstructionStats(d=2)
    stats.update(x[:3], x_hat[:3])  # streamed in two uneven batches
    stats.update(x[3:], x_hat[3:])
    # Σ‖x−x̂‖² = 4; per-dimension centred: dim0 deviations 1,1,0,0 -> 2; dim1 1,1,4,4 -> 10; total 12.
    assert stats.result()["fvu"] == pytest.approx(4 / 12)
    assert stats.result()["fvu"] != pytest.approx(4 / float((x - x.mean()).square().sum()))  # scalar mean
    assert stats.result()["fvu"] != pytest.approx(4 / float(x.square().sum()))  # no centring


def test_mse_cosine_and_relative_bias():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x_hat = torch.tensor([[0.5, 0.0], [0.0, 1.0]])  # pure shrinkage by half
    res = ReconstructionStats(d=2)
    res.update(x, x_hat)
    out = res.result()
    assert out["mse"] == pytest.approx((0.25 + 1.0) / 4)
    assert out["cosine"] == pytest.approx(1.0)
    # E‖x̂‖² / E<x, x̂> = (0.25 + 1) / (0.5 + 2) = 0.5
    assert out["rel_bias"] == pytest.approx(0.5)


def test_firing_stats_l0_dead_dense_and_histogram():
    z = torch.zeros(200, 4)
    z[:, 0] = 1.0  # fires on every token -> dense
    z[:10, 1] = 2.0  # 5% -> dense_1 but not dense_10
    z[0, 2] = 3.0  # 0.5%
    stats = FiringStats(d_sae=4)
    stats.update(z[:150])
    stats.update(z[150:])
    out = stats.result()
    assert out["n_tokens"] == 200
    assert out["l0"] == pytest.approx((200 + 10 + 1) / 200)
    assert out["dead_fraction"] == pytest.approx(0.25) and out["n_dead"] == 1
    assert out["dense_10"] == pytest.approx(0.25)
    assert out["dense_1"] == pytest.approx(0.5)
    assert sum(out["freq_hist"]["counts"]) == 3
    assert stats.act_max.tolist() == [1.0, 2.0, 3.0, 0.0]
    assert np.allclose(stats.mean_act_when_firing()[:3], [1.0, 2.0, 3.0])


def _brute_auroc(scores, positive):
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_hand_computed_and_against_brute_force():
    # Latent 0 fires exactly on value 1: perfect detector. Hand value for latent 1: see below.
    labels = np.array([0, 1, 1, 0, -1, 2])
    codes = np.array(
        [
            [0.0, 0.0],
            [2.0, 1.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [0.0, -1.0],
            [0.0, 3.0],
        ]
    )
    auc = auroc_matrix(sp.csr_matrix(codes), labels, n_values=3)
    assert auc[0, 1] == pytest.approx(1.0)
    # latent 1, value 1: positives {1, 0}; negatives {0, 1, -1, 3}: wins 1>0,1>-1,0>-1 = 3, ties 1=1,0=0 -> 1; /8
    assert auc[1, 1] == pytest.approx(4 / 8)
    rng = np.random.default_rng(0)
    dense = rng.integers(-2, 4, size=(60, 5)).astype(float) * (rng.random((60, 5)) < 0.4)
    lab = rng.integers(-1, 3, size=60)
    got = auroc_matrix(sp.csr_matrix(dense), lab, 3)
    for j, v in itertools.product(range(5), range(3)):
        assert got[j, v] == pytest.approx(_brute_auroc(dense[:, j], lab == v))


def test_best_match_and_coverage():
    auc = np.array([[0.95, 0.5, np.nan], [0.6, 0.85, np.nan]])
    names, best = best_matches(auc, ["shape=a", "shape=b", "shape=c"])
    assert names == ["shape=a", "shape=b"] and best.tolist() == [0.95, 0.85]
    assert coverage(auc, 0.9) == pytest.approx(0.5)  # value c is not measurable
    assert coverage(auc, 0.8) == pytest.approx(1.0)


def test_purity_and_entropy():
    top = np.array([[3, 3, 3, 1], [0, 1, -1, -1], [-1, -1, -1, -1]])
    purity, entropy, majority = purity_and_entropy(top)
    assert purity[:2].tolist() == [0.75, 0.5]
    assert entropy[0] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert entropy[1] == pytest.approx(1.0)
    assert np.isnan(purity[2]) and majority.tolist()[:1] == [3] and majority[2] == -1


def test_monosemanticity_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(7, 3))
    acts = np.abs(rng.normal(size=(7, 4))) * (rng.random((7, 4)) < 0.7)
    acts[:, 3] += 1.0  # a latent that never hits zero: min-max scaling matters
    got = monosemanticity_scores(sp.csr_matrix(acts), emb)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for j in range(4):
        a = acts[:, j]
        t = (a - a.min()) / (a.max() - a.min())
        num = sum(t[n] * t[m] * unit[n] @ unit[m] for n, m in itertools.combinations(range(7), 2))
        den = sum(t[n] * t[m] for n, m in itertools.combinations(range(7), 2))
        assert got[j] == pytest.approx(num / den)
    # Identical embeddings for every image that fires -> perfectly monosemantic.
    same = monosemanticity_scores(sp.csr_matrix(np.array([[1.0], [0.5], [0.0]])), np.array([[1, 0], [2, 0], [0, 1.0]]))
    assert same[0] == pytest.approx(1.0)


def test_patch_auroc_punishes_generic_object_and_background_latents():
    from visae.activation_store.layout import TokenLayout
    from visae.eval.codes import Codes
    from visae.eval.interpretability import GroundTruth, factor_auroc

    # One image of 4 patches: square, circle, background, background.
    layout = TokenLayout(4, None, (), (0, 1, 2, 3), (2, 2))
    labels = np.array([[[0, 1], [-1, -1]]], dtype=np.int16)
    # Columns: latent 0 fires on both objects (a foreground detector), latent 1 on the square only,
    # latent 2 on the square and the background.
    tokens = np.array(
        [
            [1.0, 2.0, 1.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 1.0],
        ]
    )
    image = sp.csc_matrix(tokens.max(0, keepdims=True))
    codes = Codes(sp.csc_matrix(tokens), image, layout, image)
    truth = GroundTruth(np.array([-1]), None, {}, {"shape": ["square", "circle"]}, {"shape": labels})
    auc = factor_auroc(codes, truth).auc  # [latent, value]
    assert auc[1, 0] == pytest.approx(1.0)  # clean square detector
    # foreground detector: perfect against background, chance among objects -> min = 0.5
    assert auc[0, 0] == pytest.approx(0.5)
    # square + background: perfect among objects, but tied with both background patches -> (1 + 0.5 + 0.5) / 3
    assert auc[2, 0] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_image_level_factors_are_scored_over_every_token_cls_included():
    """A latent that fires only on the CLS token of one-object images is a count detector: scored by its max over
    every token, not over the patches (where it never fires), which the top images and heatmaps use."""
    import torch

    from visae.activation_store.layout import TokenLayout
    from visae.eval.codes import CodeCollector
    from visae.eval.interpretability import GroundTruth, factor_auroc, image_factor_auroc

    layout = TokenLayout(3, 0, (), (1, 2), (1, 2))  # CLS, then two patches
    count = np.array([0, 1, 0, 1, 1, 0])
    z = torch.zeros(6, 3, 2)
    z[:, 0, 0] = torch.from_numpy(count == 0).float()  # latent 0: CLS of one-object images
    z[:, 1:, 1] = 1.0  # latent 1: every patch
    collector = CodeCollector(2, layout)
    collector.update(z)
    codes = collector.finish()
    assert codes.images[:, 0].nnz == 0  # the patch view never sees latent 0
    truth = GroundTruth(np.full(6, -1), None, {"count": count}, {"count": ["1", "2"]}, {})
    for match in (factor_auroc(codes, truth), image_factor_auroc(codes, truth)):
        assert match.auc[0, 0] == pytest.approx(1.0) and match.auc[1, 0] == pytest.approx(0.5)
