"""The loader under torch.distributed: 2 gloo ranks started by torchrun."""

import os
import subprocess
import sys

import numpy as np
import pytest
from harvest_helpers import subprocess_env
from synthetic_store import make_store

from visae.activation_store.loader import ActivationLoader

pytestmark = pytest.mark.slow


def test_two_ranks_serve_every_token_exactly_once_per_epoch_and_resume(tmp_path):
    store, _ = make_store(str(tmp_path / "s.zarr"), n_images=30, chunk_images=4)
    worker = os.path.join(os.path.dirname(__file__), "loader_rank_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", worker,
           store.path, str(tmp_path / "rank")]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = [np.load(tmp_path / f"rank{r}.npy") for r in range(2)]
    for epoch in range(2):
        shares = []
        for rank in range(2):
            plan = ActivationLoader(store, "blocks.0.resid_post", buffer_tokens=60, rank=rank, world_size=2)
            start = sum(plan.rank_tokens_per_epoch(e) for e in range(epoch))
            shares.append({tuple(t) for t in served[rank][start:start + plan.rank_tokens_per_epoch(epoch)].tolist()})
        assert not shares[0] & shares[1]
        assert shares[0] | shares[1] == {(i, t) for i in range(30) for t in range(6)}
    assert sum(map(len, served)) == 2 * 30 * 6
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}_resumed.npy"),
                                      np.load(tmp_path / f"rank{rank}_tail.npy"))
