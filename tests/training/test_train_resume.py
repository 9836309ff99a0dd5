"""Kill -9 a training process mid-run, resume it, and get bit-identical weights (CPU): an SAE, a skip transcoder
and a crosscoder; and a resume that changes a hook is refused."""

import signal
import time
from pathlib import Path

import pytest
import yaml
from cli_process import visae_command

from visae.training.synthetic import synthetic_store

HOOK = "blocks.0.resid_post"
MORE_HOOKS = ["blocks.0.mlp_in", "blocks.0.mlp_out"]
KINDS = {"sae": {"architecture": "topk"},
         "transcoder": {"architecture": "topk_skip_transcoder", "hook": MORE_HOOKS[0], "out_hook": MORE_HOOKS[1]},
         "crosscoder": {"architecture": "crosscoder", "cross_hooks": MORE_HOOKS}}


def _config(tmp_path: Path, store: Path, out_dir: str, kind: str = "sae") -> Path:
    cfg = {"store": str(store), "hook": HOOK, **KINDS[kind], "k": 4, "expansion_factor": 4,
           "total_tokens": 256 * 300, "batch_size": 256, "checkpoint_every_steps": 7, "log_every_steps": 5,
           "eval_every_steps": 10, "eval_tokens": 2048, "dead_after_tokens": 256 * 10,
           "out_dir": str(tmp_path / out_dir), "run_name": "run", "wandb_mode": "disabled"}
    path = tmp_path / f"{out_dir}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_kill9_then_resume_is_bit_identical(tmp_path, kind):
    store = tmp_path / "store.zarr"
    synthetic_store(str(store), d=32, n_images=64, more_hooks=MORE_HOOKS)
    visae_command(["train", "--config", str(_config(tmp_path, store, "straight", kind))], tmp_path)

    killed_cfg = _config(tmp_path, store, "killed", kind)
    run_dir = tmp_path / "killed" / "run"
    proc = visae_command(["train", "--config", str(killed_cfg)], tmp_path, wait=False)
    deadline = time.time() + 240
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.05)  # just after the first checkpoint, possibly mid-write of a later one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "sae" / "cfg.json").exists(), "the run finished before it was killed"
    if kind != "sae":
        other = ["--out-hook", HOOK] if kind == "transcoder" else ["--cross-hooks", HOOK, MORE_HOOKS[1]]
        refused = visae_command(["train", "--resume", str(run_dir), *other], tmp_path, wait=False)
        _, err = refused.communicate(timeout=400)
        assert refused.returncode != 0 and "cannot resume: the config differs from the checkpoint's" in err

    visae_command(["train", "--resume", str(run_dir)], tmp_path)
    straight = (tmp_path / "straight" / "run" / "sae" / "sae_weights.safetensors").read_bytes()
    resumed = (run_dir / "sae" / "sae_weights.safetensors").read_bytes()
    assert resumed == straight
    assert not (run_dir / "checkpoint.pt").exists()
    steps = [line for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps))  # no record written twice across the kill
