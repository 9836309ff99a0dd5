"""Hub publish/download against the stand-in Hub server (tests/hub_double.py, a test double) with the
real huggingface_hub client. The client runs in subprocesses because HF_ENDPOINT must be set before
huggingface_hub is imported."""

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hub_double import HubDouble

from visae.sae import SAE, SAEConfig, create_sae

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_visaeTestTokenDoNotLeak0123456789"


def client_env(hub_url: str, hf_home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub_url, HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home), HF_TOKEN=SECRET,
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", **extra)
    return env


def run_client(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def run_recorded(args: list[str], env: dict, published: dict) -> str:
    """Run a client process that must succeed; keep its output for the token-leak check; return its stdout."""
    result = run_client(args, env)
    assert result.returncode == 0, result.stderr
    published["outputs"].append(result.stdout + result.stderr)
    return result.stdout


def make_sae(folder: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    metadata = {"model_name": "timm:vit_tiny_patch16_224.augreg_in21k", "hook_name": "blocks.3.resid_post",
                "token_kind": "patches", "fvu": 0.123, "l0": 4.0, "dead_fraction": 0.05, "training_tokens": 409600}
    sae = create_sae(SAEConfig(architecture=arch, d_in=16, d_sae=64, k=4, metadata=metadata))
    sae.init_from_data(torch.randn(128, 16) * 3)
    sae.save(folder, sparsity=torch.linspace(-5, 0, 64))
    return folder


def saev_bytes(state: dict, activation: dict) -> bytes:
    buffer = io.BytesIO()
    buffer.write((json.dumps({"schema": 2, "cfg": {"d_vit": 16, "activation": activation}}) + "\n").encode())
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hub():
    server = HubDouble().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """Two SAEs published with `visae publish` by a client holding a token."""
    root = tmp_path_factory.mktemp("hub")
    dirs = [make_sae(root / "topk", "topk", 0), make_sae(root / "jumprelu", "jumprelu", 1)]
    env = client_env(hub.url, root / "hf_home")
    result = run_client(["-m", "visae", "publish", *map(str, dirs), "--repo", "visae-test/toy-saes"], env)
    assert result.returncode == 0, result.stderr
    return {"root": root, "dirs": dirs, "env": env, "outputs": [result.stdout + result.stderr]}


def test_publish_writes_card_manifest_and_folders(hub, published):
    files = hub.files("visae-test/toy-saes")
    ids = ["blocks.3.resid_post/topk-k4-x4", "blocks.3.resid_post/jumprelu-x4"]
    for sae_id, folder in zip(ids, published["dirs"]):
        for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
            assert files[f"{sae_id}/{name}"] == (folder / name).read_bytes()
    manifest = json.loads(files["visae_manifest.json"])
    entry = manifest["saes"][ids[0]]
    assert (entry["fvu"], entry["l0"], entry["dead_fraction"], entry["training_tokens"]) == (0.123, 4.0, 0.05, 409600)
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "visae"
    assert front["base_model"] == "timm/vit_tiny_patch16_224.augreg_in21k"
    assert "topk" in front["tags"] and "sparse-autoencoder" in front["tags"]
    assert "| `blocks.3.resid_post/topk-k4-x4` | topk |" in card and "409,600" in card
    assert f"Bearer {SECRET}" in hub.auth_headers  # the token was really used


def test_pull_is_bit_exact_and_works_offline_from_cache(hub, published):
    env = published["env"]
    sae_id = "blocks.3.resid_post/topk-k4-x4"
    stdout = run_recorded(["-m", "visae", "pull", "visae-test/toy-saes", sae_id], env, published)
    folder = Path(stdout.strip().splitlines()[-1])
    for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        assert (folder / name).read_bytes() == (published["dirs"][0] / name).read_bytes()

    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))
    torch.save(x, published["root"] / "x.pt")
    script = (f"import torch; from sae import SAE; x = torch.load({str(published['root'] / 'x.pt')!r}); "
              f"sae = SAE.from_pretrained('visae-test/toy-saes', {sae_id!r}); "
              f"torch.save(sae(x).detach(), {str(published['root'] / 'y.pt')!r})")
    offline = dict(env, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    run_recorded(["-c", script], offline, published)
    expected = SAE.load(published["dirs"][0])(x).detach()
    assert torch.equal(torch.load(published["root"] / "y.pt"), expected)


def test_clear_errors_for_missing_corrupt_and_half_uploaded_repos(hub, published):
    sae_id = "blocks.3.resid_post/topk-k4-x4"
    weights = f"{sae_id}/sae_weights.safetensors"
    hub.copy_repo("visae-test/toy-saes", "visae-test/corrupt")
    data = bytearray(hub.files("visae-test/toy-saes")[weights])
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    hub.rewrite("visae-test/corrupt", weights, bytes(data))
    hub.copy_repo("visae-test/toy-saes", "visae-test/half")
    hub.rewrite("visae-test/half", weights, None)
    cases = {
        "missing": ("visae-test/no-such-repo", sae_id),
        "corrupt": ("visae-test/corrupt", sae_id),
        "half": ("visae-test/half", sae_id),
        "unknown_id": ("visae-test/toy-saes", "blocks.0.resid_post/nope"),
        "unknown_release": ("not-a-release", sae_id),
    }
    script = (
        "import json; from sae.hub import download_sae\nout = {}\n"
        f"for name, (repo, sae_id) in {cases!r}.items():\n"
        "    try:\n        download_sae(repo, sae_id); out[name] = 'no error'\n"
        "    except (ValueError, FileNotFoundError) as err:\n        out[name] = str(err)\n"
        "print(json.dumps(out))"
    )
    errors = json.loads(run_recorded(["-c", script], published["env"], published).strip().splitlines()[-1])
    assert "not found (404)" in errors["missing"]
    assert "checksum mismatch" in errors["corrupt"]
    assert "is incomplete" in errors["half"] and "publish the SAE again" in errors["half"]
    assert "has no SAE 'blocks.0.resid_post/nope'" in errors["unknown_id"] and sae_id in errors["unknown_id"]
    assert "neither a known release" in errors["unknown_release"]

    cli = run_client(["-m", "visae", "pull", "visae-test/no-such-repo", sae_id], published["env"])
    assert cli.returncode == 2 and "visae pull: error:" in cli.stderr and "Traceback" not in cli.stderr
    published["outputs"].append(cli.stdout + cli.stderr)


def test_registry_releases_of_saev_repos_download_and_convert(hub, published):
    g = torch.Generator().manual_seed(7)
    state = {"W_enc": torch.randn(16, 48, generator=g), "b_enc": torch.randn(48, generator=g),
             "W_dec": torch.randn(48, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    single = saev_bytes(state, {"cls": "Relu", "params": {}})
    hub.add_repo("osunlp/SAE_CLIP_24K_ViT-B-16_IN1K", {"sae.pt": single, "README.md": b"---\nlicense: mit\n---\n"})
    multi = saev_bytes(state, {"cls": "TopK", "params": {"top_k": 8}})
    row = {"run_id": "abc123", "layer": 6, "l0": 8.0, "mse": 0.1, "path": "layer_6/abc123/sae.pt",
           "sha256": hashlib.sha256(multi).hexdigest()}
    bad = dict(row, run_id="bad", path="layer_7/bad/sae.pt", sha256="0" * 64)
    manifest = (json.dumps(row) + "\n" + json.dumps(bad) + "\n").encode()
    hub.add_repo("osunlp/SAE_DINOv3_ViT-S-16_IN1K",
                 {"manifest.jsonl": manifest, row["path"]: multi, bad["path"]: multi})
    script = (
        "import json; from sae.hub import download_sae; from sae import SAE\nout = {}\n"
        "a = SAE.load(download_sae('saev-clip-vit-b16-in1k', 'blocks.-2.resid_post'))\n"
        "b = SAE.load(download_sae('saev-dinov3-vits16-in1k', 'layer_6/abc123'))\n"
        "out['a'] = [a.architecture, a.cfg.metadata['hook_name'], a.cfg.metadata['model_name'], "
        "a.cfg.metadata['conversion']['source']]\n"
        "out['b'] = [b.architecture, b.cfg.k, b.cfg.metadata['hook_name']]\n"
        "try:\n    download_sae('saev-dinov3-vits16-in1k', 'layer_7/bad')\nexcept ValueError as err:\n"
        "    out['bad'] = str(err)\n"
        "print(json.dumps(out))"
    )
    out = json.loads(run_recorded(["-c", script], published["env"], published).strip().splitlines()[-1])
    assert out["a"] == ["standard", "blocks.-2.resid_post", "open_clip:ViT-B-16/openai",
                        "hf://osunlp/SAE_CLIP_24K_ViT-B-16_IN1K/sae.pt"]
    assert out["b"] == ["topk", 8, "blocks.6.resid_post"]
    assert "checksum mismatch" in out["bad"]


def test_token_never_written_to_files_or_logs(hub, published):
    test_publish_writes_card_manifest_and_folders(hub, published)
    assert all(SECRET not in text for text in published["outputs"])
    leaked = [p for p in published["root"].rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert all(SECRET.encode() not in data for data in hub.files("visae-test/toy-saes").values())
