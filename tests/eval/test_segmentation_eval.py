"""`visae eval` computes saev's segmentation metrics when the store has a segmentation (here the shapes source's
`shape` patch labels, background as a class) and writes them into the summary, feature table and report."""

import json

import numpy as np
import pytest

from tests.eval_fixtures import train_sae
from visae.activation_store.harvest_config import HarvestConfig
from visae.activation_store.harvester import harvest
from visae.eval.config import EvalConfig
from visae.eval.evaluate import evaluate


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-eval")
    store = harvest(HarvestConfig(out=str(root / "store.zarr"), model="visae:toy-vit-shapes",
                                  images="shapes:n=48,seed=3", hooks=["blocks.-2.resid_post"], tokens="patches",
                                  batch_size=24, num_workers=1, progress=False, device="cpu"))
    sae_dir = train_sae(store.path, store.hooks[0], root / "runs", "seg", d_sae=128, k=8, tokens=8_192,
                        token_kind="patches")
    return evaluate(EvalConfig(sae_dir=str(sae_dir), store=store.path, top_k=4, n_quantiles=2, model_passes=False,
                               progress=False, device="cpu"))


def test_summary_holds_saevs_figures(results):
    seg = results.summary["segmentation"]
    assert seg["factor"] == "shape" and list(seg["per_class"]) == ["square", "ellipse", "heart", "triangle",
                                                                   "background"]
    for key in ("probe_r", "map", "purity_16", "purity_64", "coverage_0_3"):
        assert seg[key] is not None and 0.0 <= seg[key] <= 1.0, (key, seg[key])
    assert seg["n_train_patches"] + seg["n_held_out_patches"] == 48 * 64
    assert "Probe R" in results.summary["metric_definitions"]["segmentation"].replace("probe_r", "Probe R")


def test_feature_table_and_report_carry_the_per_latent_columns(results):
    features = results.features
    for column in ("seg_best_class", "seg_probe_r", "seg_purity_16", "seg_purity_64", "seg_purity_256"):
        assert column in features.columns
    r = features["seg_probe_r"].to_numpy(dtype=float)
    assert np.nanmax(r) <= 1.0 and np.isfinite(r).any()
    report = (results.root / "report.html").read_text()
    assert "Segmentation (saev&#x27;s metrics)" in report or "Segmentation (saev's metrics)" in report
    assert "Probe R" in report and "Coverage@0.3" in report
    json.loads((results.root / "summary.json").read_text())  # strict JSON: NaN written as null
