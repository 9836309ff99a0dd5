"""Interventions through the service: the HTTP endpoints (switch features off or boost them on an uploaded or store
image and get the predictions before and after), their refusals, the feature page's "what this feature does", and
the encode page's off/boost controls driven in headless Chromium (screenshots go to test-artifacts/)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as skdata

from visae.eval.interventions import typical_maxima
from visae.service.app import create_app
from visae.service.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.slow  # the shared dictionaries are built through harvest, train and eval once per session


@pytest.fixture(scope="module")
def client(catalog):
    return TestClient(create_app(catalog), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def photo() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).resize((96, 96)).save(buffer, format="PNG")
    return buffer.getvalue()


def top_feature(catalog) -> int:
    return int(catalog.get("resid").results.features["rank"].idxmin())


def upload(client, photo: bytes, **form):
    return client.post("/api/dictionaries/resid/intervene", files={"file": ("astronaut.png", photo, "image/png")},
                       data=form)


def assert_refused(response, code: str, *phrases: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and all(p in error["message"] for p in phrases), error


def test_no_edit_gives_the_clean_predictions(client, catalog):
    image = client.get("/api/dictionaries/resid/images?limit=1").json()["images"][0]["image"]
    answer = client.get(f"/api/dictionaries/resid/images/{image}/intervene").json()
    assert answer["hook"] == "blocks.1.resid_post" and answer["edit"]["ablate"] == [] and answer["edit"]["steer"] == {}
    assert answer["predictions"]["before"] == answer["predictions"]["after"]
    head = answer["summary"]["heads"]["output"]
    assert head["kl"] == 0 and head["flips"] == 0
    top = answer["predictions"]["before"]["output"][0]
    assert 0 < top["prob"] <= 1 and not top["output"].startswith("class ")  # a 1000-class timm head: ImageNet names


def test_boosting_and_switching_off_change_the_predictions(client, catalog, photo):
    feature = top_feature(catalog)
    boosted = upload(client, photo, boost=[str(feature)], scale="4").json()
    peak = typical_maxima(catalog.get("resid").results)[feature]
    assert boosted["edit"]["steer"][str(feature)] == {"scale": 4.0, "value": pytest.approx(4 * peak)}
    assert boosted["summary"]["heads"]["output"]["kl"] > 0
    assert boosted["predictions"]["before"] != boosted["predictions"]["after"]
    off = upload(client, photo, ablate=[str(feature)]).json()
    assert off["edit"]["ablate"] == [feature] and off["summary"]["heads"]["output"]["kl"] >= 0


def test_bad_interventions_are_refused_naming_the_valid_range_or_hook(client, photo):
    assert_refused(upload(client, photo, ablate=["128"]), "invalid_intervention", "latent 128 is out of range",
                   "0..127")
    assert_refused(upload(client, photo, boost=["-1"]), "invalid_intervention", "latent -1 is out of range")
    assert_refused(upload(client, photo, ablate=["1"], hook="blocks.0.resid_post"), "invalid_intervention",
                   "trained on blocks.1.resid_post", "intervene at blocks.1.resid_post")
    assert_refused(upload(client, photo, ablate=["1"], boost=["1"]), "conflicting_edits", "[1]")
    assert_refused(upload(client, photo, boost=["1"], scale="-2"), "invalid_request", "scale")
    assert_refused(upload(client, photo, ablate=[str(i) for i in range(65)]), "too_many_edits", "64")


def test_feature_page_says_what_the_feature_does(client, catalog):
    detail = client.get(f"/api/dictionaries/resid/features/{top_feature(catalog)}").json()
    assert isinstance(detail["scores"]["effect_output"], str) and detail["scores"]["effect_size"] is not None


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (CI installs it)")
def test_encode_page_switches_a_feature_off_and_boosts_it(catalog, tmp_path, photo):
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "astronaut.png"
    picture.write_bytes(photo)
    with BackgroundServer(create_app(catalog)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.set_default_timeout(60_000)
        page.goto(url.rstrip("/") + "/d/resid/encode")
        page.wait_for_selector("body[data-ready]")
        page.set_input_files("#file", str(picture))
        page.click("#upload button[type=submit]")
        page.wait_for_selector("#intervention[data-state=ready]")
        assert page.get_attribute("#intervention", "data-edit") == ""
        assert float(page.get_attribute("#intervention", "data-kl") or "nan") == 0
        before = page.inner_text("#predictions tbody td.before")
        feature = page.locator("#encoded li.encoded-feature button.boost").first.get_attribute("data-feature")

        page.locator("#encoded li.encoded-feature button.boost").first.click()
        page.wait_for_selector(f"#intervention[data-state=ready][data-edit='boost:{feature}']")
        assert float(page.get_attribute("#intervention", "data-kl") or "nan") > 0
        assert page.inner_text("#predictions tbody td.before") == before
        assert page.inner_text("#predictions tbody td.after") != before
        assert page.get_attribute(f"button.boost[data-feature='{feature}']", "aria-pressed") == "true"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-intervene.png"), full_page=True)

        page.locator("#encoded li.encoded-feature button.off").first.click()
        page.wait_for_selector(f"#intervention[data-state=ready][data-edit='off:{feature}']")
        assert page.get_attribute(f"button.boost[data-feature='{feature}']", "aria-pressed") == "false"
        page.goto(url.rstrip("/") + f"/d/resid/features/{top_feature(catalog)}")
        page.wait_for_selector("body[data-ready]")
        assert page.inner_text("#effect").startswith("Switching it off on its top images")
        browser.close()
    assert errors == []
