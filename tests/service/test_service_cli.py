"""`visae serve` as a user runs it: a real process on loopback, and dictionaries named by a Hub repo id
(against the stand-in Hub server of tests/hub_double.py, a test double, with the real huggingface_hub client)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest
from hub_double import REPO_ROOT, clean_env, python_against_hub

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_visae_serve_process_binds_loopback_and_answers(built):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "visae", "serve", str(built.resid), "--weights", str(built.weights),
         "--port", str(port)], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO_ROOT)
    assert process.stdout is not None
    try:
        banner = process.stdout.readline()
        assert re.search(rf"1 dictionary at http://127\.0\.0\.1:{port}/", banner), banner
        for _ in range(100):  # uvicorn starts listening just after the banner
            try:
                listed = httpx.get(f"http://127.0.0.1:{port}/api/dictionaries", timeout=10).json()
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert [d["id"] for d in listed["dictionaries"]] == ["resid"]
        with socket.socket() as probe:  # bound to 127.0.0.1 only: a wildcard bind would accept on 127.0.0.2 too
            assert probe.connect_ex(("127.0.0.2", port)) != 0
    finally:
        process.terminate()
        process.wait(timeout=30)


SERVE_FROM_HUB = """
import json, sys
from fastapi.testclient import TestClient
from visae.service.server import build_app
client = TestClient(build_app([sys.argv[1]]))
listed = client.get("/api/dictionaries").json()["dictionaries"]
feature = client.get(f"/api/dictionaries/{listed[0]['id']}/features/3").json()
print(json.dumps({"listed": listed, "similar": len(feature["similar"]), "top": feature["top"]}))
"""


def test_serve_a_repo_from_the_hub(built, tmp_path):
    with python_against_hub(tmp_path / "hf_home") as (_, run):
        published = run("-m", "visae", "publish", str(built.resid), "--repo", "visae-test/served")
        assert published.returncode == 0, published.stderr
        served = run("-c", SERVE_FROM_HUB, "visae-test/served")
        assert served.returncode == 0, served.stderr
        answer = json.loads(served.stdout.strip().splitlines()[-1])
    listed = answer["listed"]
    assert len(listed) == 1 and listed[0]["id"].startswith("visae-test-served--blocks.1.resid_post")
    assert listed[0]["hook"] == "blocks.1.resid_post" and listed[0]["d_sae"] == 128
    assert listed[0]["evaluated"] is False  # publishing carries the weights, not the eval results
    assert answer["similar"] == 12 and answer["top"] == []
