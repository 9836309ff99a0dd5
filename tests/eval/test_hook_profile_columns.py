"""The crosscoder's feature-table columns (eval/hook_profile.py) on decoders built to live in one hook or several."""

import numpy as np
import torch

from visae.eval.hook_profile import SHARED, hook_profile_columns, norm_column
from visae.sae import CrossCoder, SAEConfig, create_sae

HOOKS = ["blocks.1.resid_post", "blocks.2.resid_post"]


def test_each_latent_is_named_by_the_hook_it_lives_in_or_shared():
    sae = create_sae(SAEConfig(architecture="crosscoder", d_in=8, hook_dims=[4, 4], d_sae=3, k=1))
    assert isinstance(sae, CrossCoder)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.W_dec[0, :4] = 1.0  # only at the first hook
        sae.W_dec[1, 4:] = 1.0  # only at the second
        sae.W_dec[2] = 1.0  # at both alike
    columns, summary = hook_profile_columns(sae, HOOKS, np.array([True, True, False]))
    assert columns["hook_exclusive"] == [HOOKS[0], HOOKS[1], SHARED]
    np.testing.assert_allclose(np.asarray(columns[norm_column(HOOKS[0])], dtype=float), [2.0, 0.0, 2.0])
    assert summary["n_latents"] == 2 and summary["exclusive_fraction"] == {HOOKS[0]: 0.5, HOOKS[1]: 0.5}
