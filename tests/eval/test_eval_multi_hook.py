"""`visae eval` of a skip transcoder (block 2's MLP of the shipped toy model, mlp_in -> mlp_out) and a crosscoder
(blocks 1 and 2's residual stream), each trained with the real trainer on a small toy-model store of `shapes`."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.activation_store.store import ActivationStore
from visae.eval.config import EvalConfig
from visae.eval.downstream import as_heads
from visae.eval.evaluate import SourceImages, evaluate
from visae.eval.hook_profile import norm_column
from visae.sae import SAE
from visae.sae.crosscoder import CrossCoder
from visae.training.config import TrainConfig
from visae.training.run import train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MLP_IN, MLP_OUT, MLP_HIDDEN = "blocks.2.mlp_in", "blocks.2.mlp_out", "blocks.2.mlp_hidden"
CROSS = ("blocks.1.resid_post", "blocks.2.resid_post")
QUICK: dict[str, Any] = dict(k=8, expansion_factor=4, total_tokens=256 * 60, batch_size=256, log_every_steps=20,
                             eval_every_steps=30, checkpoint_every_steps=1000, eval_tokens=4096, wandb_mode="disabled",
                             device="cpu")
DOWNSTREAM = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ActivationStore:
    """The shipped toy model harvested at block 2's MLP (input, hidden layer, output) and two residual streams."""
    cfg = HarvestConfig(out=str(tmp_path_factory.mktemp("toy") / "store.zarr"), images="shapes:n=32,seed=0",
                        hooks=[MLP_IN, MLP_HIDDEN, MLP_OUT, *CROSS], batch_size=32, num_workers=1, device="cpu",
                        progress=False)
    return harvest(cfg)


def quick_eval(sae_dir, store: ActivationStore) -> Any:
    return evaluate(EvalConfig(sae_dir=str(sae_dir), store=store.path, top_k=4, n_quantiles=2, batch_images=32,
                               downstream_images=DOWNSTREAM, neuron_images=16, probe_rows=0, effect_latents=0,
                               report_features=4, device="cpu", progress=False))


@pytest.fixture(scope="module")
def transcoder(store, tmp_path_factory):
    out = train(TrainConfig(store=store.path, hook=MLP_IN, out_hook=MLP_OUT, architecture="topk_skip_transcoder",
                            out_dir=str(tmp_path_factory.mktemp("tc")), **QUICK))
    return out, quick_eval(out, store)


@pytest.fixture(scope="module")
def crosscoder(store, tmp_path_factory):
    out = train(TrainConfig(store=store.path, hook=CROSS[0], cross_hooks=list(CROSS[1:]), architecture="crosscoder",
                            out_dir=str(tmp_path_factory.mktemp("cc")), **QUICK))
    return out, quick_eval(out, store)


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).square().sum() / (x - x.mean(0)).square().sum())


def tokens(store: ActivationStore, hook: str) -> torch.Tensor:
    x = torch.from_numpy(store.read(hook, 0, store.n_images)).float()
    return x.reshape(-1, x.shape[-1])


def test_a_transcoder_is_scored_on_its_output_hook(store, transcoder):
    sae_dir, results = transcoder
    s = results.summary
    assert (s["kind"], s["hook"], s["out_hook"]) == ("transcoder", MLP_IN, MLP_OUT)
    sae = SAE.load(sae_dir)
    with torch.no_grad():
        prediction, z = sae.forward_with_latents(tokens(store, MLP_IN))
    assert s["fvu"] == pytest.approx(fvu(tokens(store, MLP_OUT), prediction), rel=1e-5)
    assert s["fvu"] < 0.5  # it predicts the MLP's output, far better than its mean
    assert fvu(tokens(store, MLP_IN), tokens(store, MLP_OUT)) > 2 * s["fvu"]  # not its input
    assert s["l0"] == pytest.approx(float((z != 0).sum(1).double().mean()))
    assert s["dead_fraction"] == pytest.approx(float(((z != 0).sum(0) == 0).double().mean()))
    # Top images show the latents as computed from the input hook.
    per_image = z.reshape(store.n_images, -1, z.shape[1])[:, list(store.layout.patch_indices)].max(1).values
    j = int(results.features.sort_values("rank").iloc[0]["feature"])
    assert results.feature(j).top_images[0] == int(per_image[:, j].argmax())
    assert results.features["best_auroc"].notna().any() and "factor_auroc" in s  # ground truth on shapes
    assert f"{MLP_IN} → {MLP_OUT}" in results.report_path.read_text()
    metadata = json.loads((sae_dir / "cfg.json").read_text())["metadata"]
    assert metadata["eval"]["out_hook"] == MLP_OUT and metadata["fvu"] == pytest.approx(s["fvu"])


def test_the_spliced_transcoder_replaces_the_mlp_far_better_than_ablation(store, transcoder):
    sae_dir, results = transcoder
    down = results.summary["downstream"]
    mean = down["mean_over_heads"]
    assert down["n_images"] == DOWNSTREAM and mean["recovered_vs_zero"] > 0.7, down["heads"]
    for head, stats in down["heads"].items():
        assert stats["kl_sae"] < stats["kl_zero"], (head, stats)
    # The same splice through the model's own splice_from (the transcoder reads mlp_in in the spliced pass itself).
    model, sae = load_model(store.model_spec, device="cpu"), SAE.load(sae_dir)
    pixels = SourceImages(store, DOWNSTREAM, model.preprocess)(0, DOWNSTREAM)
    clean = as_heads(model(pixels))

    def predict(act: torch.Tensor) -> torch.Tensor:
        return sae(act.reshape(-1, act.shape[-1])).reshape(act.shape)

    with torch.no_grad(), model.splice_from(MLP_IN, MLP_OUT, predict):
        spliced = as_heads(model(pixels))
    for head, stats in down["heads"].items():
        p, q = F.log_softmax(clean[head].double(), -1), F.log_softmax(spliced[head].double(), -1)
        kl = float((p.exp() * (p - q)).sum(-1).mean())
        assert stats["kl_sae"] == pytest.approx(kl, rel=1e-3, abs=1e-7), head


def test_transcoder_latents_are_compared_with_the_mlps_neurons(store, transcoder):
    sae_dir, results = transcoder
    sup = results.summary["superposition"]
    assert sup["neuron_hook"] == MLP_HIDDEN and sup["n_images"] == 16
    assert sup["neuron_basis"]["n_units"] == store.d(MLP_HIDDEN)
    assert sup["sae_basis"]["n_units"] == SAE.load(sae_dir).cfg.d_sae
    assert 0.5 <= sup["sae_basis"]["mean_best_auroc"] <= 1 and 0.5 <= sup["neuron_basis"]["mean_best_auroc"] <= 1
    assert "neurons_per_latent" not in results.features  # its decoder writes the MLP output, not the neurons


def test_a_crosscoder_is_scored_and_spliced_at_each_hook(store, crosscoder):
    sae_dir, results = crosscoder
    s = results.summary
    assert s["kind"] == "crosscoder" and s["hooks"] == list(CROSS) and list(s["per_hook"]) == list(CROSS)
    sae = SAE.load(sae_dir)
    with torch.no_grad():
        x_hat = sae(torch.cat([tokens(store, hook) for hook in CROSS], dim=-1))
    for hook, where in zip(CROSS, sae.hook_slices()):
        assert s["per_hook"][hook]["fvu"] == pytest.approx(fvu(tokens(store, hook), x_hat[:, where]), rel=1e-5)
    assert s["per_hook"][CROSS[0]]["fvu"] != pytest.approx(s["per_hook"][CROSS[1]]["fvu"], rel=1e-3)
    assert set(s["downstream_per_hook"]) == set(CROSS) and "downstream" not in s
    for hook, down in s["downstream_per_hook"].items():
        assert down["mean_over_heads"]["kl_sae"] < down["mean_over_heads"]["kl_zero"], hook
    assert "spliced at blocks.2.resid_post" in results.report_path.read_text()
    metadata = json.loads((sae_dir / "cfg.json").read_text())["metadata"]
    assert set(metadata["eval_summary"]["per_hook"]) == set(CROSS) and set(metadata["eval"]["downstream_per_hook"])


def test_a_crosscoders_feature_table_profiles_where_each_latent_lives(crosscoder):
    sae_dir, results = crosscoder
    sae = SAE.load(sae_dir)
    assert isinstance(sae, CrossCoder)
    norms = sae.decoder_norms().numpy()
    features = results.features
    for i, hook in enumerate(CROSS):
        np.testing.assert_allclose(features[norm_column(hook)].to_numpy(), norms[:, i], rtol=1e-6)
    share = norms / norms.sum(1, keepdims=True)
    exclusive = np.where(share.max(1) >= 0.9, np.asarray(CROSS)[share.argmax(1)], "shared")
    assert features["hook_exclusive"].tolist() == exclusive.tolist()
    profile = results.summary["hook_profile"]
    fired = features["freq"].to_numpy() > 0
    assert profile["n_latents"] == int(fired.sum())
    for hook in CROSS:
        assert profile["exclusive_fraction"][hook] == pytest.approx(float((exclusive[fired] == hook).mean()))
    assert profile["shared_fraction"] == pytest.approx(float((exclusive[fired] == "shared").mean()))


def test_a_store_lacking_a_hook_is_refused_naming_the_hooks_it_holds(transcoder, crosscoder, tmp_path):
    partial = harvest(HarvestConfig(out=str(tmp_path / "partial.zarr"), images="shapes:n=4,seed=0",
                                    hooks=[MLP_IN, CROSS[0]], batch_size=4, num_workers=1, device="cpu",
                                    progress=False))
    held = f"the store holds {MLP_IN}, {CROSS[0]}"
    with pytest.raises(ValueError, match=f"trained on {MLP_OUT}, {held}"):
        quick_eval(transcoder[0], partial)
    with pytest.raises(ValueError, match=f"trained on {CROSS[1]}, {held}"):
        quick_eval(crosscoder[0], partial)
