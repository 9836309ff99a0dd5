"""`visae eval` on an open_clip image tower (random init, saved so eval rebuilds it): embedding cosine of the
spliced pass, zero-shot accuracy through the text tower, and text labels per latent."""

import pytest
from safetensors.torch import save_file

from tests.eval_fixtures import train_sae
from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.activation_store.models import load_model
from visae.eval.config import EvalConfig
from visae.eval.evaluate import evaluate
from visae.eval.text_labels import DEFAULT_VOCABULARY

pytestmark = pytest.mark.slow
SPEC = "open_clip:ViT-S-32,force_image_size=64"


@pytest.fixture(scope="module")
def clip_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    weights = root / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(SPEC).module.state_dict().items()}, str(weights))
    store = harvest(HarvestConfig(out=str(root / "store.zarr"), model=SPEC, weights=str(weights),
                                  images="shapes:n=64,seed=0,size=64", hooks=["blocks.-2.resid_post"], batch_size=32,
                                  num_workers=2, progress=False))
    sae_dir = train_sae(store.path, store.hooks[0], root / "runs", "clip", d_sae=64, k=4, tokens=3000)
    return evaluate(EvalConfig(sae_dir=str(sae_dir), store=store.path, weights=str(weights), top_k=4, n_quantiles=2,
                               downstream_images=32, batch_images=32, progress=False))


def test_clip_tower_downstream_and_zero_shot(clip_results):
    down = clip_results.summary["downstream"]
    assert down["kind"] == "embedding" and down["n_images"] == 32
    stats = down["mean_over_heads"]
    assert -1 <= stats["cosine_zero"] < stats["cosine_sae"] <= 1
    zero_shot = down["zero_shot"]
    assert zero_shot["zero_shot_acc_change"] == pytest.approx(
        zero_shot["zero_shot_acc_sae"] - zero_shot["zero_shot_acc_clean"]
    )


def test_clip_text_labels_come_from_the_vocabulary(clip_results):
    features = clip_results.features
    on_patches = features["n_images_fired"] > 0  # image activation = max over patches
    vocabulary = set(DEFAULT_VOCABULARY) | {"square", "ellipse", "heart", "triangle"}
    assert on_patches.any() and features.loc[on_patches, "text_label"].notna().all()
    assert set(features.loc[on_patches, "text_label"]) <= vocabulary
    assert features.loc[~on_patches, "text_label"].isna().all()
