"""`visae eval` end to end on a tiny random-init ViT harvested on `shapes`, with SAEs from the real trainer."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file

from tests.eval_fixtures import tiny_store, train_sae
from visae.eval.config import load_eval_config
from visae.eval.downstream import token_splice
from visae.eval.evaluate import evaluate
from visae.sae import SAE
from visae.service.cli import main

CONTRACT_COLUMNS = ("feature", "freq", "log10_freq", "max_act", "mean_act", "purity", "label_entropy", "top_label",
                    "best_factor", "best_auroc", "monosemanticity", "text_label", "score", "rank")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    store, weights = tiny_store(root)
    sae_dir = train_sae(store.path, "blocks.0.resid_post", root / "runs", "resid", d_sae=128, k=8, tokens=30_000,
                        token_kind="patches")
    return root, store, weights, sae_dir


@pytest.fixture(scope="module")
def results(setup):
    root, store, weights, sae_dir = setup
    cfg = load_eval_config(overrides={"sae_dir": str(sae_dir), "store": store.path, "weights": str(weights),
                                      "top_k": 6, "n_quantiles": 4, "progress": False, "report_features": 6})
    return evaluate(cfg)


def test_writes_the_contract_layout(setup, results):
    _, store, _, sae_dir = setup
    d_sae, rows_cols = 128, store.layout.grid
    eval_dir = sae_dir / "eval"
    assert {p.name for p in eval_dir.iterdir()} == {"summary.json", "features.parquet", "top.safetensors",
                                                   "thumbs", "report.html"}
    features = pd.read_parquet(eval_dir / "features.parquet")
    assert set(CONTRACT_COLUMNS) <= set(features.columns) and len(features) == d_sae
    assert sorted(features["rank"]) == list(range(1, d_sae + 1))
    top = load_file(str(eval_dir / "top.safetensors"))
    assert top["top_images"].dtype == np.int64 and top["top_images"].shape == (d_sae, 6)
    assert top["top_heatmaps"].dtype == np.float16 and top["top_heatmaps"].shape == (d_sae, 6, *rows_cols)
    assert top["quantile_heatmaps"].shape == (d_sae, 4, *rows_cols)
    kinds = ("top_images", "quantile_images", "top_patch_images")
    referenced = set(np.concatenate([top[k].ravel() for k in kinds]).tolist())
    referenced -= {-1}
    assert {int(p.stem) for p in (eval_dir / "thumbs").iterdir()} == referenced
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["n_tokens"] == store.n_images * len(store.layout.patch_indices)  # only the SAE's tokens
    assert "docs/metrics.md" in summary["metric_definitions"]["note"]
    metadata = json.loads((sae_dir / "cfg.json").read_text())["metadata"]
    assert metadata["eval"]["fvu"] == pytest.approx(summary["fvu"]) and metadata["l0"] == pytest.approx(summary["l0"])
    assert not list(sae_dir.glob(".eval.*"))  # no temporary folders left behind (core.atomic names them .eval.tmp-PID)


def test_metrics_match_an_independent_computation(setup, results):
    _, store, _, sae_dir = setup
    sae = SAE.load(sae_dir)
    x = torch.from_numpy(store.read("blocks.0.resid_post", 0, store.n_images))[:, list(store.layout.patch_indices)]
    x = x.reshape(-1, x.shape[-1]).double()
    with torch.no_grad():
        z = sae.encode(x.float())
        x_hat = sae.decode(z).double()
    fvu = float((x - x_hat).square().sum() / (x - x.mean(0)).square().sum())
    assert results.summary["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert results.summary["l0"] == pytest.approx(float((z != 0).sum(1).float().mean()))
    freq = (z != 0).float().mean(0).numpy()
    assert results.features["freq"].to_numpy() == pytest.approx(freq)
    # The top image of a latent is the image whose best patch activates it most; its heatmap is that patch grid.
    per_image = z.reshape(store.n_images, -1, z.shape[1]).max(1).values
    j = int(results.features.sort_values("rank").iloc[0]["feature"])
    view = results.feature(j)
    assert view.top_images[0] == int(per_image[:, j].argmax())
    assert view.top_acts[0] == pytest.approx(float(per_image[:, j].max()), rel=1e-3)
    assert float(view.top_heatmaps[0].max()) == pytest.approx(view.top_acts[0], rel=1e-2)
    # Its best patch is the top patch, at the heatmap's argmax.
    assert view.top_patch_images[0] == view.top_images[0]
    assert view.top_patch_positions[0] == int(np.argmax(view.top_heatmaps[0]))


def test_downstream_and_ground_truth_are_measured(results):
    down = results.summary["downstream"]
    assert down["kind"] == "classifier" and set(down["heads"]) == {"output"}
    stats = down["heads"]["output"]
    assert 0 <= stats["kl_sae"] < stats["kl_zero"]
    assert stats["recovered_vs_zero"] == pytest.approx((stats["kl_zero"] - stats["kl_sae"]) / stats["kl_zero"])
    assert 0 <= results.summary["coverage_0_9"] <= 1
    assert results.summary["factor_level"]["shape"] == "patch" and results.summary["factor_level"]["count"] == "image"
    image_level = results.summary["image_level"]  # every factor also at image level, for object-level properties
    assert 0 <= image_level["coverage_0_9"] <= 1 and set(image_level["factor_auroc"]) >= {"shape", "count"}
    scored = results.features.dropna(subset=["score"])
    assert scored["best_auroc"].between(0, 1).all() and scored["monosemanticity"].notna().any()


def test_ranked_rows_sort_by_any_column(results):
    rows = results.ranked(by="best_auroc", descending=True, limit=5)
    values = [r["best_auroc"] for r in rows]
    assert values == sorted(values, reverse=True) and len(rows) == 5
    with pytest.raises(ValueError, match="sortable columns"):
        results.ranked(by="nope")


def test_token_splice_replaces_only_the_chosen_tokens():
    act = torch.arange(24.0).reshape(1, 4, 6)
    out = token_splice([1, 3], torch.zeros_like)(act)
    assert out[0, [1, 3]].abs().sum() == 0 and torch.equal(out[0, [0, 2]], act[0, [0, 2]])


def test_mlp_hidden_compares_neurons_with_features(setup, tmp_path):
    root, store, weights, _ = setup
    sae_dir = train_sae(store.path, "blocks.1.mlp_hidden", root / "runs", "mlp", d_sae=256, k=8, tokens=20_000)
    res = evaluate(load_eval_config(overrides={"sae_dir": str(sae_dir), "store": store.path, "weights": str(weights),
                                               "top_k": 4, "n_quantiles": 2, "progress": False,
                                               "downstream_images": 16, "neuron_images": 24}))
    sup = res.summary["superposition"]
    assert sup["neuron_basis"]["n_units"] == store.d("blocks.1.mlp_hidden") and sup["sae_basis"]["n_units"] == 256
    assert 1.0 <= sup["mean_neurons_per_latent"] <= store.d("blocks.1.mlp_hidden")
    assert res.features["neurons_per_latent"].notna().to_numpy().all()


def test_cli_eval_and_compare(setup, results, tmp_path, capsys):
    root, store, weights, sae_dir = setup
    assert main(["compare", str(sae_dir), str(sae_dir)]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["mmcs_a_to_b"] == pytest.approx(1.0) and same["hungarian_mean_cos"] == pytest.approx(1.0)
    assert main(["eval", str(sae_dir), "--store", str(tmp_path / "missing.zarr")]) == 2
    assert "no activation store" in capsys.readouterr().err
    assert main(["eval", str(sae_dir), "--store", store.path, "--model", "x"]) == 2
    assert "either --store or --model" in capsys.readouterr().err
    assert main(["eval", str(sae_dir), "--store", store.path]) == 2  # a fresh random init is not the harvested model
    assert "--weights" in capsys.readouterr().err
