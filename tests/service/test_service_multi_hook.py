"""Transcoders and crosscoders served like SAEs: their kind and hooks in the dictionary list, a transcoder feature's
input and output sides, a crosscoder feature's hook profile, encoding (interventions refused in JSON), and both kinds
published to, pulled from and served from a Hub (the stand-in server of tests/hub_double.py, a test double)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from hub_double import python_against_hub
from PIL import Image
from safetensors.numpy import load_file, save_file
from service_multi_hook import CROSS_HOOKS, MLP_IN, MLP_OUT, MultiHookBuilt
from skimage import data as skdata

from visae.eval.results import EvalResults
from visae.service.app import create_app
from visae.service.catalog import Catalog, Dictionary
from visae.service.encode import model_for
from visae.service.locate import locate

pytestmark = pytest.mark.slow  # the dictionaries are built through harvest, train (and eval) once per session


@pytest.fixture(scope="module")
def client(multi_catalog):
    return TestClient(create_app(multi_catalog), raise_server_exceptions=False)


def photo_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).resize((96, 96)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_list_names_each_kind_and_its_hooks(client):
    listed = {d["id"]: d for d in client.get("/api/dictionaries").json()["dictionaries"]}
    transcoder, crosscoder = listed["transcoder"], listed["crosscoder"]
    assert (transcoder["kind"], transcoder["hooks"], transcoder["out_hook"]) == ("transcoder", [MLP_IN], MLP_OUT)
    assert (transcoder["hook_dims"], transcoder["d_out"]) == ([192], 192)
    assert (crosscoder["kind"], crosscoder["hooks"], crosscoder["hook_dims"]) == ("crosscoder", list(CROSS_HOOKS),
                                                                                  [192, 192])
    assert "intervene" in transcoder["refused"] and "encode" not in crosscoder["refused"]
    details = client.get("/api/dictionaries/crosscoder").json()
    assert list(details["per_hook"]) == list(CROSS_HOOKS) and 0 < details["per_hook"][CROSS_HOOKS[1]]["fvu"] < 2
    assert 0 <= details["hook_profile"]["shared_fraction"] <= 1


def test_a_transcoder_feature_shows_what_it_reads_and_what_it_writes(client, multi_hook: MultiHookBuilt):
    weights = load_file(str(multi_hook.transcoder / "sae_weights.safetensors"))
    feature = 5
    answer = client.get(f"/api/dictionaries/transcoder/features/{feature}").json()
    assert answer["hook_profile"] is None
    read, written = answer["sides"]["input"], answer["sides"]["output"]
    assert (read["hook"], read["width"], written["hook"], written["width"]) == (MLP_IN, 192, MLP_OUT, 192)
    norms = np.linalg.norm(weights["W_dec"].astype(np.float64), axis=1)
    assert written["decoder_norm"] == pytest.approx(norms[feature], rel=1e-5)
    assert written["decoder_norm_percentile"] == pytest.approx((norms < norms[feature]).mean(), abs=1e-4)
    encoder = weights["W_enc"].T / np.linalg.norm(weights["W_enc"].T, axis=1, keepdims=True)
    cosine = encoder @ encoder[feature]
    cosine[feature] = -2
    assert [x["feature"] for x in read["similar"][:3]] == np.argsort(-cosine)[:3].tolist()
    assert written["similar"] == answer["similar"]  # the decoder-cosine neighbours are the output side's
    assert EvalResults.exists(multi_hook.transcoder) == bool(answer["top"])  # the input side's, once evaluated


def test_a_crosscoder_feature_shows_its_decoder_norm_at_each_hook(client, multi_hook: MultiHookBuilt):
    norms = load_file(str(multi_hook.crosscoder / "hook_profile.safetensors"))["decoder_norms"]
    answer = client.get("/api/dictionaries/crosscoder/features/7").json()
    assert answer["sides"] is None
    profile = answer["hook_profile"]["hooks"]
    assert [bar["hook"] for bar in profile] == list(CROSS_HOOKS)
    np.testing.assert_allclose([bar["norm"] for bar in profile], norms[7], atol=1e-5)
    np.testing.assert_allclose([bar["share"] for bar in profile], norms[7] / norms[7].sum(), atol=1e-5)


def test_a_hook_profile_linked_out_of_the_folder_is_not_read(multi_hook: MultiHookBuilt, tmp_path):
    folder = tmp_path / "linked"
    shutil.copytree(multi_hook.crosscoder, folder, ignore=shutil.ignore_patterns("eval"))
    real = load_file(str(folder / "hook_profile.safetensors"))["decoder_norms"]
    outside = tmp_path / "outside.safetensors"
    save_file({"decoder_norms": np.full_like(real, 9.0)}, str(outside))
    (folder / "hook_profile.safetensors").unlink()
    (folder / "hook_profile.safetensors").symlink_to(outside)
    dictionary = Dictionary.load("linked", folder)
    np.testing.assert_allclose(dictionary.hook_norms, real, atol=1e-5)  # computed from the weights instead


def test_both_kinds_encode_images_and_refuse_interventions_in_json(client, multi_catalog):
    for name in ("transcoder", "crosscoder"):
        dictionary = multi_catalog.get(name)
        answer = client.post(f"/api/dictionaries/{name}/encode", files={"file": ("p.png", photo_png(), "image/png")})
        assert answer.status_code == 200, answer.text
        top = answer.json()["top_features"]
        model, _ = model_for(dictionary)
        photo = Image.open(io.BytesIO(photo_png()))
        with torch.no_grad():
            cache = model.run_with_cache(model.preprocess(photo)[None], list(dictionary.hooks.read))
            codes = dictionary.sae.encode(torch.cat([cache[h][0] for h in dictionary.hooks.read], -1).float())
        assert [t["feature"] for t in top] == codes.amax(0).topk(len(top)).indices.tolist()
        assert "intervene" in answer.json()["refused"]
        refused = client.get(f"/api/dictionaries/{name}/images/0/intervene?ablate=1")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_applicable"
        assert "decoder writes" in refused.json()["error"]["message"]


def test_a_crosscoder_over_two_models_refuses_to_encode(multi_hook: MultiHookBuilt, tmp_path):
    folder = tmp_path / "two-models"
    shutil.copytree(multi_hook.crosscoder, folder, ignore=shutil.ignore_patterns("eval"))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["model_names"] = ["timm:model_a", "timm:model_b"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    client = TestClient(create_app(Catalog.load(locate(str(folder)))), raise_server_exceptions=False)
    answer = client.post("/api/dictionaries/two-models/encode", files={"file": ("p.png", photo_png(), "image/png")})
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "not_applicable"
    assert "several models (timm:model_a, timm:model_b)" in answer.json()["error"]["message"]


SERVE_FROM_HUB = """
import json, sys
from fastapi.testclient import TestClient
from visae.service.server import build_app
client = TestClient(build_app([sys.argv[1]]))
listed = client.get("/api/dictionaries").json()["dictionaries"]
features = {d["kind"]: client.get(f"/api/dictionaries/{d['id']}/features/2").json() for d in listed}
print(json.dumps({"listed": listed, "features": features}))
"""


def test_both_kinds_publish_pull_and_serve_through_the_hub(multi_hook: MultiHookBuilt, tmp_path):
    with python_against_hub(tmp_path / "hf_home") as (hub, run):
        published = run("-m", "visae", "publish", str(multi_hook.transcoder), str(multi_hook.crosscoder),
                        "--repo", "visae-test/multi")
        assert published.returncode == 0, published.stderr
        files = hub.files("visae-test/multi")
        cross_id = "+".join(CROSS_HOOKS) + "/crosscoder-k8-n64"
        pulled = run("-m", "visae", "pull", "visae-test/multi", cross_id)
        assert pulled.returncode == 0, pulled.stderr
        served = run("-c", SERVE_FROM_HUB, "visae-test/multi")
        assert served.returncode == 0, served.stderr
    trans_id = f"{MLP_IN}-to-{MLP_OUT}/topk_skip_transcoder-k8-n64"
    for sae_id, folder in ((trans_id, multi_hook.transcoder), (cross_id, multi_hook.crosscoder)):
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        assert sorted(n.removeprefix(sae_id + "/") for n in files if n.startswith(sae_id + "/")) == names
        assert all(files[f"{sae_id}/{name}"] == (folder / name).read_bytes() for name in names)
    assert "hook_profile.safetensors" in names  # the crosscoder's, last
    manifest = json.loads(files["visae_manifest.json"])["saes"]
    assert manifest[trans_id]["kind"] == "transcoder" and manifest[trans_id]["hook_name_out"] == MLP_OUT
    assert manifest[trans_id]["d_out"] == 192 and list(manifest[trans_id]["fvu_per_hook"]) == [MLP_OUT]
    cross = manifest[cross_id]
    assert (cross["kind"], cross["hook_names"], cross["hook_dims"]) == ("crosscoder", list(CROSS_HOOKS), [192, 192])
    assert list(cross["fvu_per_hook"]) == list(CROSS_HOOKS)
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert {"crosscoder", "topk_skip_transcoder"} <= set(front["tags"])
    assert f"| `{trans_id}` | transcoder | `{MLP_IN}` | `{MLP_OUT}` | d_in 192, d_out 192, 64 latents | 8 |" in card
    assert f"| `{cross_id}` | crosscoder | `{CROSS_HOOKS[0]}`, `{CROSS_HOOKS[1]}` |" in card
    local = Path(pulled.stdout.strip().splitlines()[-1])
    for name in ("cfg.json", "sae_weights.safetensors", "hook_profile.safetensors"):
        assert (local / name).read_bytes() == (multi_hook.crosscoder / name).read_bytes()
    answer = json.loads(served.stdout.strip().splitlines()[-1])
    assert sorted(d["kind"] for d in answer["listed"]) == ["crosscoder", "transcoder"]
    assert [bar["hook"] for bar in answer["features"]["crosscoder"]["hook_profile"]["hooks"]] == list(CROSS_HOOKS)
    assert answer["features"]["transcoder"]["sides"]["output"]["hook"] == MLP_OUT
