"""MMCS, Hungarian matching, feature splitting and neuron-loading checks on hand-made decoders."""

import numpy as np
import pytest
import torch

from visae.eval.decoder_similarity import cosine_matrix, feature_splitting, hungarian, mmcs
from visae.eval.neurons import neuron_loadings


def test_mmcs_and_hungarian_recover_a_permutation():
    a = torch.eye(3) * torch.tensor([[1.0], [2.0], [3.0]])  # row norms must not matter
    b = a[[2, 0, 1]]
    cos = cosine_matrix(a, b)
    assert mmcs(cos) == pytest.approx(1.0)
    match = hungarian(cos)
    assert match["cols"].tolist() == [1, 2, 0] and match["mean_cos"] == pytest.approx(1.0)


def test_mmcs_hand_value_and_greedy_vs_one_to_one():
    s = np.sqrt(0.5)
    a = torch.tensor([[1.0, 0.0], [s, s]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cos = cosine_matrix(a, b)
    assert mmcs(cos) == pytest.approx((1.0 + s) / 2)
    match = hungarian(cos)  # a0->b0 (1) and a1->b1 (s) beat a0->b1 + a1->b0 (0 + s)
    assert match["cols"].tolist() == [0, 1] and match["mean_cos"] == pytest.approx((1 + s) / 2)


def test_feature_splitting_finds_children():
    narrow = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    wide = torch.tensor([[1.0, 0.2, 0.0], [1.0, -0.2, 0.0], [0.0, 0.1, 1.0], [0.0, 1.0, 0.0]])
    split = feature_splitting(cosine_matrix(narrow, wide), threshold=0.5)
    assert split["parent"][:3].tolist() == [0, 0, 1]
    assert split["children"] == {0: [0, 1], 1: [2]}  # wide latent 3 is orthogonal to both: no parent above 0.5
    assert split["frac_split"] == pytest.approx(0.5)


def test_cosine_matrix_rejects_other_widths():
    with pytest.raises(ValueError, match="d_in"):
        cosine_matrix(torch.ones(2, 3), torch.ones(2, 4))


def test_neuron_loadings_participation_ratio():
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = neuron_loadings(w)
    assert out["neurons_per_latent"].tolist() == pytest.approx([1.0, 4.0])
    # neuron 0 columns: (1, 0.5) -> (1.25)^2 / (1 + 0.0625); neurons 1..3: one latent each
    assert out["latents_per_neuron"].tolist() == pytest.approx([1.5625 / 1.0625, 1.0, 1.0, 1.0])
