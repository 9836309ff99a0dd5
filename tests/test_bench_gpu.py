"""bench/gpu.py runs as is: a CPU smoke run at tiny sizes prints one JSON object with every figure; without a GPU
the real run exits 2 with a clear message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from harvest_helpers import subprocess_env

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def test_cpu_smoke_run_prints_every_figure_as_one_json_object(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small"], capture_output=True,
                          text=True, timeout=300, env={**subprocess_env(), "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["bench"] == "gpu" and out["device"] == "cpu" and out["small"] is True
    assert len(out["steps_by_shape"]) == 2
    for shape in out["steps_by_shape"]:
        assert shape["gemm_tflops"] > 0 and shape["floor_tokens_per_s"] > 0
        for name in ("topk", "batchtopk", "matryoshka"):
            assert shape[f"{name}_tokens_per_s"] > 0 and shape[f"{name}_vs_floor"] > 0
        assert shape["topk_vs_floor_target"] == ">= 0.4"
    loader = out["loader"]
    assert loader["device_tokens_per_s"] > 0 and loader["device_vs_step"] > 0 and loader["d"] == 768
    assert out["sweep"]["members"] == 8 and out["sweep"]["sweep_vs_separate"] > 0
    harvest = out["harvest"]
    assert len(harvest["hooks"]) == 4 and harvest["harvest_vs_forward"] > 0 and harvest["dtype"] == "bfloat16"
    assert not list(tmp_path.iterdir())  # its scratch folder is removed


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the real run would start")
def test_without_a_gpu_it_exits_2_saying_so():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env=subprocess_env())
    assert done.returncode == 2 and "no CUDA GPU visible; run on a machine with one" in done.stderr
    assert done.stdout == ""
