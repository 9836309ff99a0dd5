"""End to end in headless Chromium: the dictionary list, the feature browser, a feature page with its image grid
loaded, and an upload whose feature list and heatmap appear. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image
from skimage import data as skdata

from visae.service.app import create_app
from visae.service.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (CI installs it)")]


@pytest.fixture(scope="module")
def base_url(catalog):
    with BackgroundServer(create_app(catalog)) as url:
        yield url.rstrip("/")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@contextmanager
def open_page(browser, base_url: str) -> Iterator:
    """A fresh page that records console errors and any request that leaves the server (there must be none)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.foreign = [], []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
    own = urlparse(base_url).netloc
    page.on("request", lambda req: urlparse(req.url).netloc not in (own, "") and not req.url.startswith("data:")
            and page.foreign.append(req.url))
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()
    assert page.foreign == [], "the UI must work offline"


@pytest.fixture
def page(browser, base_url):
    with open_page(browser, base_url) as opened:
        yield opened


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-{name}.png"), full_page=True)


def test_dictionary_list_then_browser(page, base_url):
    page.goto(base_url + "/")
    page.wait_for_selector("body[data-ready]")
    rows = page.locator("#dictionaries tbody tr")
    assert rows.count() == 2
    assert "blocks.1.resid_post" in rows.nth(0).inner_text()
    shot(page, "dictionaries")

    page.click("text=resid")
    page.wait_for_url(f"{base_url}/d/resid*")
    page.wait_for_selector("#features .feature-card")
    assert page.locator("#features .feature-card").count() == 48
    assert "128 features" in page.inner_text("#count")
    page.select_option("#sort", "freq")
    page.wait_for_function("document.querySelector('#count').textContent.includes('128 features') && "
                           "location.search.includes('sort=freq')")
    page.fill("#q", "zzz-no-such-label")
    page.wait_for_function("document.querySelector('#count').textContent.startsWith('0 features')")
    page.fill("#q", "")
    page.wait_for_function("document.querySelector('#count').textContent.startsWith('128 features')")
    shot(page, "features")
    assert page.errors == []


def test_feature_page_shows_loaded_image_grid(page, base_url, catalog):
    feature = int(catalog.get("resid").results.features["rank"].idxmin())
    page.goto(f"{base_url}/d/resid")
    page.wait_for_selector("#features .feature-card")
    page.locator("#features .feature-card").first.click()
    page.wait_for_url(f"{base_url}/d/resid/features/{feature}")
    page.wait_for_selector("body[data-ready]")
    sizes = page.eval_on_selector_all("#top img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, "
                                                  "i.naturalHeight])")
    top = catalog.get("resid").feature_detail(feature)["top"]
    thumb = Image.open(catalog.get("resid").results.thumb_path(top[0]["image"]))
    assert len(sizes) == len(top) > 0
    assert all(done and (w, h) == thumb.size for done, w, h in sizes)
    page.wait_for_function(
        "[...document.querySelectorAll('#quantiles img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#histogram svg rect.bar").count() > 0
    assert page.locator("#similar li").count() == 12
    assert page.locator("#neurons-section").is_hidden()
    shot(page, "feature")
    assert page.errors == []


def test_mlp_feature_page_lists_neurons(page, base_url):
    page.goto(f"{base_url}/d/mlp/features/0")
    page.wait_for_selector("body[data-ready]")
    assert page.locator("#neurons li").count() == 12
    assert page.errors == []


def test_upload_shows_features_and_heatmap(page, base_url, tmp_path):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).resize((160, 160)).save(photo)
    page.goto(f"{base_url}/d/resid/encode")
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#file", str(photo))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("body[data-encoded]")
    assert page.locator("#encoded li.encoded-feature").count() > 0
    first = page.locator("#encoded li.encoded-feature a").first.inner_text().lstrip("#")
    assert page.get_attribute("#canvas", "data-heatmap") == first
    drawn = page.evaluate("""() => { const c = document.querySelector('#canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0 || d[i + 1] > 0 || d[i + 2] > 0) n++;
        return n / (c.width * c.height); }""")
    assert drawn > 0.5
    page.locator("#encoded li.encoded-feature").nth(1).hover()
    second = page.locator("#encoded li.encoded-feature a").nth(1).inner_text().lstrip("#")
    assert page.get_attribute("#canvas", "data-heatmap") == second
    page.hover("#canvas", position={"x": 30, "y": 30})
    assert page.inner_text("#patch-info").startswith("patch (0, 0)")
    shot(page, "encode")

    page.locator("#store button.pick").first.click()
    page.wait_for_function("document.querySelector('#encoded li') !== null")
    assert page.errors == []


def test_refused_upload_shows_the_error(page, base_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.goto(f"{base_url}/d/resid/encode")
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#file", str(notes))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")
    shot(page, "encode-refused")
