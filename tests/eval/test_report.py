"""The HTML report opens offline in headless Chromium with every image decoded and visible."""

import os
from pathlib import Path

import pytest

from tests.eval_fixtures import tiny_store, train_sae
from visae.eval.config import load_eval_config
from visae.eval.evaluate import evaluate

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (CI installs it)"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    store, weights = tiny_store(root, n_images=32)
    narrow = train_sae(store.path, "blocks.0.resid_post", root / "runs", "narrow", d_sae=64, k=4, tokens=10_000)
    evaluate(load_eval_config(overrides={"sae_dir": str(narrow), "store": store.path, "weights": str(weights),
                                         "top_k": 4, "n_quantiles": 3, "progress": False}))
    wide = train_sae(store.path, "blocks.0.resid_post", root / "runs", "wide", d_sae=128, k=4, tokens=10_000)
    res = evaluate(load_eval_config(overrides={"sae_dir": str(wide), "store": store.path, "weights": str(weights),
                                               "top_k": 4, "n_quantiles": 3, "progress": False,
                                               "report_features": 5, "compare_to": [str(narrow)]}))
    return res.report_path


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "src='http" not in text and 'src="http' not in text and "<script" not in text
    for heading in ("Summary", "L0 / FVU", "Firing frequency", "Downstream", "Ground-truth factors", "Top 5 features"):
        assert heading in text


def test_report_renders_with_visible_images(report, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        alts = page.eval_on_selector_all("img", "els => els.map(e => e.alt)")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert len(widths) >= 3 + 5 and all(w > 0 for w in widths), dict(zip(alts, widths))
    assert any(a.startswith("top images of feature") for a in alts)
    assert shot.stat().st_size > 10_000
