"""Files and endpoints that are not what they claim give one line naming the problem and the next step: a pickle
passed as `--weights` to harvest and eval, a pickle in place of a dictionary's eval/top.safetensors, and a Hub
endpoint that cannot be reached by publish, pull and `SAE.from_pretrained`. Nothing is unpickled, nothing written."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from visae.service.cli import main


class Payload:
    """Pickled into the hostile files; never built, since no reader here unpickles."""


@pytest.fixture
def pickle_file(tmp_path) -> Path:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    return path


@pytest.mark.parametrize("model", ["visae:toy-vit-shapes", "timm:vit_tiny_patch16_224"])
def test_a_pickle_as_harvest_weights_is_refused_in_one_line(model, pickle_file, tmp_path, capsys):
    out = tmp_path / "store.zarr"
    assert main(["harvest", "--out", str(out), "--model", model, "--images", "shapes:n=4,seed=0",
                 "--weights", str(pickle_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visae harvest: error: ") and err.count("\n") == 1 and str(pickle_file) in err
    assert "safetensors" in err and "Traceback" not in err
    assert not out.exists()


def test_a_pickle_as_eval_weights_is_refused_in_one_line(dictionary_dir, pickle_file, capsys):
    before = sorted(p.name for p in dictionary_dir.rglob("*"))
    assert main(["eval", str(dictionary_dir), "--model", "visae:toy-vit-shapes", "--images", "shapes:n=4,seed=0",
                 "--weights", str(pickle_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visae eval: error: ") and err.count("\n") == 1 and str(pickle_file) in err
    assert sorted(p.name for p in dictionary_dir.rglob("*")) == before


def test_a_pickled_top_safetensors_stops_serve_in_one_line(dictionary_dir, capsys):
    top = dictionary_dir / "eval" / "top.safetensors"
    top.write_bytes(pickle.dumps({"top_images": Payload()}))
    assert main(["serve", str(dictionary_dir), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visae serve: error: ") and err.count("\n") == 1
    assert f"{top} is damaged or not written by visae eval" in err and "rerun `visae eval" in err


def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# huggingface_hub retries a refused connection five times with waits of up to 8 s; the client below skips the waits
# (only the sleeping: every attempt is still made) so the test does not spend 30 s per call.
CLIENT = """
import sys, time
time.sleep = lambda seconds: None
{body}
"""
CLI = "from visae.service.cli import main\nsys.exit(main(sys.argv[1:]))"
FROM_PRETRAINED = """
from visae.sae import SAE
try:
    SAE.from_pretrained("org/name", "blocks.1.resid_post")
except ConnectionError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
"""


def run_client(body: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"), HF_TOKEN="hf_test",
               HF_HUB_DISABLE_XET="1")
    return subprocess.run([sys.executable, "-c", CLIENT.format(body=body), *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["pull", "publish", "from_pretrained"])
def test_an_unreachable_hub_is_one_line_naming_the_endpoint(command, dictionary_dir, tmp_path):
    if command == "from_pretrained":
        result = run_client(FROM_PRETRAINED, [], tmp_path)
    else:
        args = (["pull", "org/name", "blocks.1.resid_post", "--out", str(tmp_path / "pulled")] if command == "pull"
                else ["publish", str(dictionary_dir), "--repo", "org/name"])
        result = run_client(CLI, args, tmp_path)
    assert result.returncode == (3 if command == "from_pretrained" else 2), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert "the Hub at http://127.0.0.1:" in last and "cannot be reached" in last and "HF_ENDPOINT" in last
    assert not (tmp_path / "pulled").exists()
