"""HTTP API of `visae serve` over a real evaluated dictionary: every endpoint, and each kind of bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import load_file
from skimage import data as skdata

from visae.service.app import create_app
from visae.service.catalog import Catalog
from visae.service.cli import main
from visae.service.encode import model_for
from visae.service.locate import locate
from visae.service.uploads import UploadLimits

pytestmark = pytest.mark.slow  # the shared dictionary is built through harvest, train and eval once per session

LIMITS = UploadLimits(max_bytes=300_000, max_pixels=600_000)


@pytest.fixture(scope="session")
def client(catalog):
    return TestClient(create_app(catalog, LIMITS), raise_server_exceptions=False)


def png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    assert "Traceback" not in response.text
    if code:
        assert error["code"] == code, error
    return error


# -- dictionaries --------------------------------------------------------------------------------------------
def test_dictionary_list_reports_summary_figures(client, built):
    listed = client.get("/api/dictionaries").json()["dictionaries"]
    assert [d["id"] for d in listed] == ["resid", "mlp"]
    summary = json.loads((built.resid / "eval" / "summary.json").read_text())
    resid = listed[0]
    for key in ("fvu", "l0", "dead_fraction", "model", "hook", "token_kind"):
        assert resid[key] == summary[key]
    assert resid["d_sae"] == 128 and resid["hook"] == "blocks.1.resid_post"


def test_dictionary_details(client):
    details = client.get("/api/dictionaries/resid").json()
    assert {"rank", "score", "freq"} <= set(details["sort_columns"])
    assert len(details["freq_hist"]["counts"]) == len(details["freq_hist"]["edges"]) - 1
    assert details["labels"], "the shapes source gives labels"


@pytest.mark.parametrize("bad", ["nope", "..", ".hidden", "a" * 200, "%2e%2e", "resid%00"])
def test_unknown_or_malformed_dictionary_ids_are_refused(client, bad):
    response = client.get(f"/api/dictionaries/{bad}")
    assert response.status_code in (404, 422)
    assert_error(response, response.status_code)


def test_path_traversal_never_reaches_the_filesystem(client):
    for url in ("/api/dictionaries/..%2F..%2Fetc/features", "/api/dictionaries/resid/images/..%2Fcfg.json",
                "/api/dictionaries/resid/images/%2e%2e%2f%2e%2e%2fcfg.png", "/static/..%2F..%2Fcatalog.py"):
        response = client.get(url)
        assert response.status_code in (404, 422), url
        assert b"W_enc" not in response.content and b"import" not in response.content


# -- feature browser ---------------------------------------------------------------------------------------
def test_features_default_to_rank_order(client, catalog):
    page = client.get("/api/dictionaries/resid/features?limit=500").json()
    ranks = [f["rank"] for f in page["features"]]
    assert ranks == sorted(ranks) and page["total"] == 128 and len(ranks) == 128
    assert page["features"][0]["feature"] == int(catalog.get("resid").results.features["rank"].idxmin())


def test_features_sort_by_any_score_both_ways(client):
    desc = [f["freq"] for f in client.get("/api/dictionaries/resid/features?sort=freq&limit=500").json()["features"]]
    url = "/api/dictionaries/resid/features?sort=freq&order=asc&limit=500"
    asc = [f["freq"] for f in client.get(url).json()["features"]]
    assert desc == sorted(desc, reverse=True) and asc == sorted(asc)


def test_features_paginate(client):
    first = client.get("/api/dictionaries/resid/features?limit=10").json()["features"]
    second = client.get("/api/dictionaries/resid/features?limit=10&offset=10").json()["features"]
    whole = client.get("/api/dictionaries/resid/features?limit=20").json()["features"]
    assert [f["feature"] for f in first + second] == [f["feature"] for f in whole]


def test_features_filter_by_label_and_search_text(client, catalog):
    frame = catalog.get("resid").results.features
    label = frame["best_factor"].mode()[0]
    filtered = client.get("/api/dictionaries/resid/features", params={"label": label, "limit": 500}).json()
    assert filtered["total"] >= (frame["best_factor"] == label).sum() > 0
    assert all(label in (f["best_factor"], f["top_label"], f["text_label"], f["patch_top_label"])
               for f in filtered["features"])
    needle = label.split("=")[-1][:4].upper()
    searched = client.get("/api/dictionaries/resid/features", params={"q": needle, "limit": 500}).json()
    assert searched["total"] > 0
    assert all(needle.lower() in json.dumps([f["best_factor"], f["top_label"], f["text_label"],
                                             f["patch_top_label"]]).lower() for f in searched["features"])
    nothing = client.get("/api/dictionaries/resid/features", params={"q": "zzz-no-such-label"}).json()
    assert nothing["total"] == 0 and nothing["features"] == []


@pytest.mark.parametrize("query, code", [
    ("sort=nope", "invalid_sort"), ("sort=best_factor", "invalid_sort"), ("order=sideways", "invalid_request"),
    ("limit=0", "invalid_request"), ("limit=100000", "invalid_request"), ("offset=-1", "invalid_request"),
    ("limit=ten", "invalid_request"), ("q=" + "x" * 300, "invalid_request"),
])
def test_bad_browser_queries_are_refused(client, query, code):
    assert_error(client.get(f"/api/dictionaries/resid/features?{query}"), 422, code)


# -- one feature ---------------------------------------------------------------------------------------------
def top_feature(client, dictionary="resid") -> int:
    return client.get(f"/api/dictionaries/{dictionary}/features?limit=1").json()["features"][0]["feature"]


def test_feature_page_matches_the_eval_results(client, built, catalog):
    feature = top_feature(client)
    detail = client.get(f"/api/dictionaries/resid/features/{feature}").json()
    top = load_file(str(built.resid / "eval" / "top.safetensors"))
    expected = [int(i) for i in top["top_images"][feature] if i >= 0]
    assert [t["image"] for t in detail["top"]] == expected and expected
    np.testing.assert_allclose([t["activation"] for t in detail["top"]], top["top_acts"][feature][: len(expected)])
    assert [q["image"] for q in detail["quantiles"]] == [int(i) for i in top["quantile_images"][feature] if i >= 0]
    assert detail["frequency"]["histogram"]["counts"] and detail["frequency"]["log10_freq"] is not None
    assert detail["scores"]["rank"] == catalog.get("resid").results.features["rank"].min()
    assert "best_factor" in detail["labels"]
    assert detail["top_neurons"] is None  # a residual-stream dictionary has no neuron basis


def test_similar_features_are_the_nearest_decoder_directions(client, catalog):
    feature = top_feature(client)
    similar = client.get(f"/api/dictionaries/resid/features/{feature}").json()["similar"]
    decoder = torch.nn.functional.normalize(catalog.get("resid").sae.W_dec.detach().float(), dim=1)
    cosine = decoder @ decoder[feature]
    cosine[feature] = -2
    assert [s["feature"] for s in similar] == cosine.topk(len(similar)).indices.tolist()
    assert feature not in [s["feature"] for s in similar]


def test_mlp_hidden_features_list_their_top_neurons(client, catalog):
    feature = top_feature(client, "mlp")
    neurons = client.get(f"/api/dictionaries/mlp/features/{feature}").json()["top_neurons"]
    row = catalog.get("mlp").sae.W_dec[feature].detach().float()
    assert [n["neuron"] for n in neurons] == row.abs().topk(len(neurons)).indices.tolist()
    assert all(0 <= n["neuron"] < 768 for n in neurons)


@pytest.mark.parametrize("feature, status", [("128", 404), ("99999999", 404), ("-1", 422), ("abc", 422), ("1.5", 422)])
def test_bad_feature_ids_are_refused(client, feature, status):
    assert_error(client.get(f"/api/dictionaries/resid/features/{feature}"), status)
    assert_error(client.get(f"/d/resid/features/{feature}"), status)


def test_heatmap_pngs_overlay_the_thumbnail(client, built):
    feature = top_feature(client)
    detail = client.get(f"/api/dictionaries/resid/features/{feature}").json()
    response = client.get(detail["top"][0]["heatmap_png"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlaid = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)
    thumb = np.asarray(Image.open(built.resid / "eval" / "thumbs" / f"{detail['top'][0]['image']}.png").convert("RGB"))
    assert overlaid.shape == thumb.shape and np.abs(overlaid - thumb).mean() > 1
    assert client.get(detail["quantiles"][0]["heatmap_png"]).status_code == 200


@pytest.mark.parametrize("tail, status", [("top/99.png", 404), ("top/-1.png", 422), ("best/0.png", 422),
                                          ("top/zero.png", 422)])
def test_bad_heatmap_requests_are_refused(client, tail, status):
    assert_error(client.get(f"/api/dictionaries/resid/features/{top_feature(client)}/{tail}"), status)


# -- images --------------------------------------------------------------------------------------------------
def test_store_images_list_and_thumbnails(client, built):
    listing = client.get("/api/dictionaries/resid/images?limit=5").json()
    assert listing["total"] > 0 and len(listing["images"]) == min(5, listing["total"])
    first = listing["images"][0]
    response = client.get(first["image_png"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (built.resid / "eval" / "thumbs" / f"{first['image']}.png").read_bytes()


def test_images_without_thumbnails_are_refused(client, catalog):
    missing = max(catalog.get("resid").image_indices) + 1000
    assert_error(client.get(f"/api/dictionaries/resid/images/{missing}.png"), 404, "unknown_image")
    assert_error(client.get(f"/api/dictionaries/resid/images/{missing}/encode"), 404, "unknown_image")
    assert_error(client.get("/api/dictionaries/resid/images/-3.png"), 422)


# -- encode --------------------------------------------------------------------------------------------------
def encode(client, payload: bytes, content_type="image/png", name="photo.png"):
    return client.post("/api/dictionaries/resid/encode", files={"file": (name, payload, content_type)})


def test_encode_an_upload_matches_the_model_and_sae(client, catalog):
    photo = Image.fromarray(skdata.astronaut()).resize((96, 96))
    answer = encode(client, png(photo)).json()
    dictionary = catalog.get("resid")
    model, _ = model_for(dictionary)
    with torch.no_grad():
        acts = model.run_with_cache(model.preprocess(photo)[None], [dictionary.hook])[dictionary.hook][0]
        codes = dictionary.sae.encode(acts.float())
    image_acts = codes.amax(0)
    top = answer["top_features"]
    assert [t["feature"] for t in top] == image_acts.topk(len(top)).indices.tolist()
    np.testing.assert_allclose([t["activation"] for t in top], image_acts.topk(len(top)).values.numpy(), rtol=1e-4,
                               atol=1e-4)
    rows, cols = answer["grid"]
    assert (rows, cols) == model.layout.grid
    patch_codes = codes[model.layout.indices("patches")].reshape(rows, cols, -1)
    np.testing.assert_allclose(top[0]["heatmap"], patch_codes[..., top[0]["feature"]].numpy(), atol=1e-3)
    assert answer["patches"][0][0][0]["feature"] == int(patch_codes[0, 0].argmax())
    assert answer["image"].startswith("data:image/png;base64,") and answer["source"]["kind"] == "upload"


def test_encode_accepts_common_image_types(client):
    photo = Image.fromarray(skdata.chelsea()).resize((120, 80))
    for fmt, mime in (("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif"), ("BMP", "image/bmp")):
        buffer = io.BytesIO()
        photo.save(buffer, format=fmt)
        response = encode(client, buffer.getvalue(), mime, f"cat.{fmt.lower()}")
        assert response.status_code == 200, (fmt, response.text)
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 128))
    assert encode(client, png(rgba)).status_code == 200


def test_encode_a_store_image(client):
    image = client.get("/api/dictionaries/resid/images?limit=1").json()["images"][0]
    answer = client.get(image["encode"]).json()
    assert answer["source"] == {"kind": "store", "image": image["image"], "width": 64, "height": 64}
    assert answer["top_features"]


def test_non_images_are_refused(client):
    assert_error(encode(client, b"just some text", "text/plain", "notes.txt"), 415, "unsupported_media_type")
    assert_error(encode(client, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "x.svg"), 415)
    assert_error(encode(client, b"MZ\x90\x00" * 100, "image/png", "fake.png"), 415, "unsupported_media_type")
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    assert_error(encode(client, tiff.getvalue(), "image/tiff", "x.tiff"), 415)


def test_empty_truncated_and_missing_uploads_are_refused(client):
    assert_error(encode(client, b""), 400, "empty_upload")
    whole = png(Image.fromarray(skdata.astronaut()).resize((200, 200)))
    assert_error(encode(client, whole[: len(whole) // 2]), 400, "broken_image")
    assert_error(client.post("/api/dictionaries/resid/encode"), 422, "invalid_request")
    assert_error(client.post("/api/dictionaries/resid/encode", data={"file": "not a file"}), 422)


def test_upload_byte_limit(client):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (320, 330, 3), dtype=np.uint8))
    payload = png(noise)
    assert LIMITS.max_bytes < len(payload) < LIMITS.max_bytes + 64 * 1024
    assert_error(encode(client, payload), 413, "too_large")  # checked by the decoder
    big = payload * 2
    assert_error(encode(client, big), 413, "too_large")  # refused from Content-Length before parsing


def test_uploads_of_unknown_length_are_refused(client):
    chunked = client.post("/api/dictionaries/resid/encode", content=iter([b"--x\r\n", b"data"]),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert_error(chunked, 411, "length_required")


def test_upload_pixel_limit_and_decompression_bombs(client, catalog):
    wide = png(Image.new("RGB", (1000, 700), (10, 200, 30)))  # 700k pixels in a few kB
    assert len(wide) < LIMITS.max_bytes
    assert_error(encode(client, wide), 413, "too_many_pixels")
    bomb = png(Image.new("1", (20_000, 10_000)), optimize=True)  # 200 M pixels in a small file
    assert len(bomb) < LIMITS.max_bytes
    assert_error(encode(client, bomb), 413)
    lenient = TestClient(create_app(catalog, UploadLimits(max_bytes=LIMITS.max_bytes, max_pixels=10**10)))
    response = lenient.post("/api/dictionaries/resid/encode", files={"file": ("bomb.png", bomb, "image/png")})
    assert_error(response, 413, "decompression_bomb")  # PIL's own bomb check still refuses it


# -- pages, schema, errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/d/resid", "/d/resid/features/0", "/d/resid/encode", "/d/mlp"])
def test_pages_are_self_contained_html(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in response.text and "http" not in response.text.replace("http-equiv", "")
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize("path", ["/d/nope", "/d/nope/encode", "/d/resid/features/4096", "/nowhere", "/static/x.js"])
def test_unknown_pages_answer_json_404(client, path):
    assert_error(client.get(path), 404)


def test_wrong_method_is_json(client):
    assert_error(client.delete("/api/dictionaries/resid"), 405)


def test_openapi_schema_lists_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/dictionaries", "/api/dictionaries/{dictionary_id}", "/api/dictionaries/{dictionary_id}/features",
                 "/api/dictionaries/{dictionary_id}/features/{feature}",
                 "/api/dictionaries/{dictionary_id}/features/{feature}/{which}/{slot}.png",
                 "/api/dictionaries/{dictionary_id}/images", "/api/dictionaries/{dictionary_id}/images/{image}.png",
                 "/api/dictionaries/{dictionary_id}/encode", "/api/dictionaries/{dictionary_id}/images/{image}/encode"):
        assert path in paths, path


def test_unexpected_errors_are_json_without_traceback(catalog, monkeypatch):
    client = TestClient(create_app(catalog, LIMITS), raise_server_exceptions=False)
    dictionary = catalog.get("resid")
    monkeypatch.setattr(type(dictionary), "details", lambda self: 1 / 0)
    error = assert_error(client.get("/api/dictionaries/resid"), 500, "internal_error")
    assert "ZeroDivisionError" in error["message"] and "line" not in error["message"]


def test_model_that_cannot_load_is_a_clear_503(built):
    catalog = Catalog.load(locate(str(built.resid)), weights=str(built.store / "zarr.json"))  # not a weights file
    client = TestClient(create_app(catalog, LIMITS), raise_server_exceptions=False)
    error = assert_error(encode(client, png(Image.new("RGB", (32, 32)))), 503, "model_unavailable")
    assert "could not be loaded" in error["message"]


# -- locating dictionaries and the command line --------------------------------------------------------------
def test_locate_a_folder_of_dictionaries(built):
    located = locate(str(built.resid.parent.parent))  # runs/ holds resid/sae and mlp/sae
    assert sorted(name for name, _ in located) == ["mlp--sae", "resid--sae"]


def test_locate_refuses_folders_without_dictionaries(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SAE folder"):
        locate(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate(str(tmp_path / "missing" / "sae"))


def test_unevaluated_dictionary_is_served_without_examples(built, tmp_path, capsys):
    folder = tmp_path / "fresh"
    folder.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        (folder / name).write_bytes((built.resid / name).read_bytes())
    located = locate(str(folder))
    assert "no eval results" in capsys.readouterr().err
    client = TestClient(create_app(Catalog.load(located, weights=str(built.weights)), LIMITS))
    listed = client.get("/api/dictionaries").json()["dictionaries"][0]
    assert listed["evaluated"] is False and listed["hook"] == "blocks.1.resid_post"
    features = client.get("/api/dictionaries/fresh/features?limit=3").json()["features"]
    assert [f["feature"] for f in features] == [0, 1, 2] and features[0]["preview"] is None
    by_freq = client.get("/api/dictionaries/fresh/features?sort=freq&limit=500").json()["features"]
    assert [f["freq"] for f in by_freq] == sorted((f["freq"] for f in by_freq), reverse=True)
    detail = client.get("/api/dictionaries/fresh/features/5").json()
    assert detail["top"] == [] and detail["quantiles"] == [] and len(detail["similar"]) == 12
    assert client.get("/api/dictionaries/fresh/images").json()["total"] == 0
    assert_error(client.get("/api/dictionaries/fresh/features/5/top/0.png"), 404, "unknown_example")
    answer = client.post("/api/dictionaries/fresh/encode", files={"file": ("red.png", png(Image.new("RGB", (64, 64))),
                                                                          "image/png")})
    assert answer.status_code == 200 and answer.json()["grid"] == [4, 4]


def test_hub_references_resolve_through_the_registry():
    with pytest.raises(ValueError, match="known releases"):
        locate("not-a-release")
    with pytest.raises(ValueError, match="has no SAE 'nope'"):
        locate("saev-dinov2-vitb14-in1k:nope")


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "visae serve: error:" in err and "port must be >= 1, <= 65535, got 70000" in err and "Traceback" not in err


def test_cli_binds_loopback_by_default():
    from visae.service.cli import parse_command

    assert parse_command(["serve", "x"])[0].host == "127.0.0.1"
