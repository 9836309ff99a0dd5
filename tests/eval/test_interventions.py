"""Interventions on latents inside the real forward pass of the shipped toy model (docs/metrics.md, "Causal
effects"): an empty edit is the identity; ablating the latent that detects shape = heart lowers the heart logit on
its top images, unlike random latents; steering it up on images where it is silent moves the prediction to heart;
`visae eval` records each top-ranked latent's effect; bad latents and hooks are refused, naming the valid ones.

The SAE reads all tokens at blocks.-2.resid_post; the factor heads read the final CLS token, so the heart latent
is chosen by the AUROC of its CLS-token code for the image's shape = heart (eval's AUROC), and its top images are
those where that code is highest."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.eval_fixtures import train_sae
from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.activation_store.sources import open_source
from visae.eval.auroc import auroc_matrix
from visae.eval.config import EvalConfig
from visae.eval.evaluate import evaluate
from visae.eval.interventions import intervene
from visae.sae import SAE, SAEConfig, create_sae

HOOK = "blocks.-2.resid_post"
HEART = 2  # index of "heart" among the toy's shape values
N_TOP = 8


class Toy:
    def __init__(self, root):
        self.store = harvest(HarvestConfig(out=str(root / "store.zarr"), model="visae:toy-vit-shapes",
                                           images="shapes:n=256,seed=1", hooks=[HOOK], batch_size=64, num_workers=1,
                                           progress=False))
        self.sae_dir = train_sae(self.store.path, self.store.hooks[0], root / "runs", "toy", d_sae=256, k=16,
                                 tokens=200_000)
        self.sae = SAE.load(self.sae_dir).eval().requires_grad_(False)
        self.model = load_model("visae:toy-vit-shapes")
        self.source = open_source(self.store.source_spec)
        acts = torch.from_numpy(self.store.read(self.store.hooks[0], 0, self.store.n_images))
        with torch.no_grad():
            self.cls_codes = self.sae.encode(acts[:, 0].float()).numpy()  # [images, d_sae]: the CLS token's code
        self.shape = np.asarray(self.store.factors["shape"][:])
        heart_auroc = auroc_matrix(sp.csc_matrix(self.cls_codes), self.shape.astype(np.int64), 4)[:, HEART]
        self.heart = int(np.nanargmax(heart_auroc))
        self.heart_auroc = float(heart_auroc[self.heart])

    def pixels(self, images) -> torch.Tensor:
        records = [self.source[int(self.store.source_index[i])] for i in images]
        return self.model.preprocess.batch([r.image for r in records if r.image is not None])

    def top_images(self, latent: int) -> np.ndarray:
        return np.argsort(-self.cls_codes[:, latent], kind="stable")[:N_TOP]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Toy:
    return Toy(tmp_path_factory.mktemp("interventions"))


def heart_logit_change(toy: Toy, latent: int, pixels: torch.Tensor) -> float:
    result = intervene(toy.model, toy.sae, pixels, ablate=[latent])
    return float((result.after["shape"][:, HEART] - result.before["shape"][:, HEART]).mean())


def test_an_empty_edit_is_exactly_the_identity(toy):
    result = intervene(toy.model, toy.sae, toy.pixels(range(8)))
    assert result.before.keys() == result.after.keys() == set(toy.source.factor_values)
    assert all(torch.equal(result.before[h], result.after[h]) for h in result.before)
    assert all(s["flips"] == 0 and s["kl"] == 0 for s in result.summary["heads"].values())


def test_ablating_the_heart_latent_lowers_the_heart_logit_unlike_random_latents(toy):
    assert toy.heart_auroc > 0.6
    pixels = toy.pixels(toy.top_images(toy.heart))
    drop = heart_logit_change(toy, toy.heart, pixels)
    live = np.flatnonzero((toy.cls_codes > 0).any(0))
    controls = np.random.default_rng(0).choice(live[live != toy.heart], 8, replace=False)
    control = [heart_logit_change(toy, int(c), pixels) for c in controls]
    print(f"heart latent {toy.heart} (AUROC {toy.heart_auroc:.3f}): heart logit {drop:+.3f}; random latents "
          f"{np.round(control, 3).tolist()}")
    assert drop < -0.5
    assert drop < min(control) - 0.25


def test_steering_a_silent_latent_up_moves_the_prediction_to_its_factor(toy):
    silent = np.flatnonzero((toy.cls_codes[:, toy.heart] == 0) & (toy.shape != HEART))[:16]
    peak = float(np.median(toy.cls_codes[toy.top_images(toy.heart), toy.heart]))
    result = intervene(toy.model, toy.sae, toy.pixels(silent), steer={toy.heart: 2.0}, typical_max={toy.heart: peak})
    before, after = (result.before["shape"].argmax(-1) == HEART), (result.after["shape"].argmax(-1) == HEART)
    gain = (result.after["shape"].log_softmax(-1) - result.before["shape"].log_softmax(-1))[:, HEART].mean()
    print(f"steering latent {toy.heart} to 2 × {peak:.2f}: heart predicted on {before.float().mean():.2f} -> "
          f"{after.float().mean():.2f} of silent images, mean log p(heart) {gain:+.2f}")
    assert gain > 1.0 and after.float().mean() > before.float().mean() + 0.3
    shape = result.summary["heads"]["shape"]
    assert shape["promoted"][0]["output"] == "heart" and shape["flips"] > 0.3
    assert result.edit["steer"][toy.heart] == {"scale": 2.0, "value": pytest.approx(2 * peak)}


def test_bad_latents_and_hooks_are_refused_naming_the_valid_ones(toy):
    pixels = toy.pixels(range(2))
    with pytest.raises(ValueError, match=r"latent 256 is out of range; this dictionary has 256 latents, 0..255"):
        intervene(toy.model, toy.sae, pixels, ablate=[256])
    with pytest.raises(ValueError, match=r"latent -1 is out of range"):
        intervene(toy.model, toy.sae, pixels, steer={-1: 2.0}, typical_max={-1: 1.0})
    with pytest.raises(ValueError, match=r"trained on blocks.4.resid_post, not blocks.2.resid_post; intervene at"):
        intervene(toy.model, toy.sae, pixels, ablate=[0], hook="blocks.2.resid_post")
    with pytest.raises(ValueError, match="typical maximum"):
        intervene(toy.model, toy.sae, pixels, steer={0: 2.0})


def test_a_transcoder_is_refused(toy):
    transcoder = create_sae(SAEConfig(architecture="topk_transcoder", d_in=96, d_sae=32, k=4,
                                      apply_b_dec_to_input=False, metadata={"hook_name": HOOK}))
    with pytest.raises(ValueError, match="reconstructs its hook; this is a transcoder"):
        intervene(toy.model, transcoder, toy.pixels(range(1)), ablate=[0])


def test_clip_towers_report_zero_shot_scores_over_a_vocabulary():
    model = load_model("open_clip:ViT-S-32,force_image_size=64")  # random init: the reading, not the effect
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture="topk", d_in=model.d_model, d_sae=32, k=4,
                               metadata={"hook_name": "blocks.-2.resid_post", "token_kind": "all"})).eval()
    pixels, vocabulary = torch.randn(2, 3, 64, 64), ["heart", "square", "cat"]
    clean = intervene(model, sae, pixels, vocabulary=vocabulary)
    assert clean.summary["embedding_cosine"] == pytest.approx(1.0) and clean.summary["heads"]["zero_shot"]["kl"] == 0
    edited = intervene(model, sae, pixels, ablate=[0, 1], steer={3: 4.0}, typical_max={3: 5.0}, vocabulary=vocabulary)
    zero_shot = edited.summary["heads"]["zero_shot"]
    assert edited.summary["kind"] == "zero_shot" and edited.summary["embedding_cosine"] < 1 and zero_shot["kl"] > 0
    moved = {item["output"] for item in zero_shot["promoted"] + zero_shot["suppressed"]}
    assert moved and moved <= set(vocabulary)
    assert set(edited.predictions(0)["after"]["zero_shot"][0]) == {"output", "prob"}


def test_eval_records_what_each_top_ranked_feature_does(toy):
    results = evaluate(EvalConfig(sae_dir=str(toy.sae_dir), store=toy.store.path, top_k=N_TOP, n_quantiles=2,
                                  downstream_images=16, effect_latents=6, max_images=128, progress=False))
    features = results.features.sort_values("rank")
    measured, rest = features.head(6), features.iloc[6:]
    assert bool(measured["effect_output"].notna().all()) and bool(rest["effect_output"].isna().all())
    factors = set(toy.source.factor_values)
    assert all(o.split("=")[0] in factors for o in measured["effect_output"])
    assert "effects" in results.summary["metric_definitions"]
    # The batched eval pass agrees with `intervene` on the same latent and images.
    row = measured.iloc[0]
    head, value = row["effect_output"].split("=")
    images = [i for i in results.top["top_images"][int(row["feature"])] if i >= 0]
    single = intervene(toy.model, toy.sae, toy.pixels(images), ablate=[int(row["feature"])])
    index = toy.source.factor_values[head].index(value)
    change = (single.after[head].softmax(-1) - single.before[head].softmax(-1))[:, index].mean()
    assert row["effect_size"] == pytest.approx(float(change), abs=1e-4)
    assert "What this feature does" in results.report_path.read_text()
