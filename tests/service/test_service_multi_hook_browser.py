"""A transcoder's and a crosscoder's pages in headless Chromium: the list names their kind and hooks, a transcoder
feature shows its input and output sides, a crosscoder feature its decoder norm per hook as bars, and the encode
page of a transcoder says why it offers no interventions. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from PIL import Image
from safetensors.numpy import load_file
from service_multi_hook import CROSS_HOOKS, MLP_IN, MLP_OUT
from skimage import data as skdata
from test_service_browser import browser, open_page, pytestmark, shot  # noqa: F401  (fixture and marks reused)

from visae.eval.results import EvalResults
from visae.service.app import create_app
from visae.service.server import BackgroundServer


@pytest.fixture(scope="module")
def base_url(multi_catalog):
    with BackgroundServer(create_app(multi_catalog)) as url:
        yield url.rstrip("/")


@pytest.fixture
def page(browser, base_url):  # noqa: F811  (the browser fixture imported above)
    with open_page(browser, base_url) as opened:
        yield opened


def test_the_list_shows_kinds_and_hooks(page, base_url):
    page.goto(base_url + "/")
    page.wait_for_selector("body[data-ready]")
    rows = {row.locator("td").first.inner_text(): row for row in page.locator("#dictionaries tbody tr").all()}
    assert rows["crosscoder"].locator("td").nth(1).inner_text() == "crosscoder"
    assert rows["crosscoder"].locator("td.hooks").inner_text() == " + ".join(CROSS_HOOKS)
    assert rows["transcoder"].locator("td.hooks").inner_text() == f"{MLP_IN} → {MLP_OUT}"
    assert page.errors == []


def test_a_transcoder_feature_page_shows_its_input_and_output_sides(page, base_url, multi_catalog, multi_hook):
    dictionary = multi_catalog.get("transcoder")
    feature = int(dictionary.results.features["freq"].idxmax()) if "freq" in dictionary.results.features else 0
    page.goto(f"{base_url}/d/transcoder/features/{feature}")
    page.wait_for_selector("body[data-ready]")
    assert page.get_attribute("#input-side", "data-hook") == MLP_IN
    assert page.get_attribute("#output-side", "data-hook") == MLP_OUT
    assert page.inner_text("#input-side h3") == f"Input side: reads {MLP_IN} (192 dims)"
    assert page.inner_text("#output-side h3") == f"Output side: writes {MLP_OUT} (192 dims)"
    assert "what the decoder row writes" in page.inner_text("#output-side")
    norm = page.locator("#output-side .figure", has_text="decoder norm").first.locator(".value").inner_text()
    assert float(norm) == pytest.approx(dictionary.decoder_norms[feature], abs=1e-3)
    assert page.locator("#input-side ol li").count() == page.locator("#output-side ol li").count() == 12
    assert page.locator("#similar-section").is_hidden() and page.locator("#profile-section").is_hidden()
    assert page.inner_text("#top-title") == f"Top images: input side, activation read from {MLP_IN}"
    if EvalResults.exists(multi_hook.transcoder):  # its top images, with heatmaps, once `visae eval` has run
        page.wait_for_function("[...document.querySelectorAll('#top img')].every(i => i.complete && i.naturalWidth)")
        assert page.locator("#top img").count() == len(dictionary.feature_detail(feature)["top"]) > 0
    shot(page, "transcoder-feature")
    assert page.errors == []


def test_a_crosscoder_feature_page_shows_its_hook_profile_bars(page, base_url, multi_hook):
    norms = load_file(str(multi_hook.crosscoder / "hook_profile.safetensors"))["decoder_norms"]
    feature = int((norms[:, 0] / norms.sum(1)).argmax())  # the latent leaning most to the first hook
    page.goto(f"{base_url}/d/crosscoder/features/{feature}")
    page.wait_for_selector("body[data-ready]")
    rows = page.locator("#hook-profile .profile-row")
    assert rows.count() == len(CROSS_HOOKS)
    widths = []
    for i, hook in enumerate(CROSS_HOOKS):
        row = rows.nth(i)
        assert row.get_attribute("data-hook") == hook and row.locator(".profile-hook").inner_text() == hook
        assert float(row.get_attribute("data-norm")) == pytest.approx(norms[feature, i], abs=1e-4)
        share = 100 * norms[feature, i] / norms[feature].sum()
        assert row.locator(".profile-value").inner_text() == f"{norms[feature, i]:.3f} · {share:.1f}%"
        widths.append(row.locator(".profile-bar").bounding_box()["width"])
    track = rows.nth(0).locator(".profile-track").bounding_box()["width"]
    assert max(widths) == pytest.approx(track, abs=1)  # the longest bar spans its track; the other in proportion
    assert widths[1] / widths[0] == pytest.approx(norms[feature, 1] / norms[feature, 0], abs=0.02)
    assert "shared by several hooks" in page.inner_text("#profile-note") or "exclusive to" in page.inner_text(
        "#profile-note")
    assert page.locator("#sides-section").is_hidden()
    shot(page, "crosscoder-feature")
    assert page.errors == []


def test_a_transcoder_encodes_and_says_why_it_offers_no_interventions(page, base_url, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).resize((160, 160)).save(photo)
    page.goto(f"{base_url}/d/transcoder/encode")
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#file", str(photo))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("body[data-encoded]")
    assert page.locator("#encoded li.encoded-feature").count() > 0
    assert page.locator("#encoded .edit-controls").count() == 0
    assert f"decoder writes {MLP_OUT}" in page.inner_text("#no-intervention")
    assert page.locator("#error").is_hidden() and page.errors == []
