"""The streaming reconstruction accumulator against a one-shot float64 computation of every figure."""

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.multiprocessing.spawn import start_processes

from visae.core import distributed
from visae.core.reconstruction import ReconstructionStats

BATCHES = (3, 11, 1, 25)  # uneven, one of a single token


def sample(n=sum(BATCHES), d=6, d_sae=10, seed=0):
    """Activations with far-apart per-dimension means, a shrunk noisy reconstruction, and codes with one dead
    latent (0), one that fires on every token (1) and one on about 5% of them (2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) + torch.linspace(-20, 20, d)
    x_hat = 0.8 * x + 0.3 * torch.randn(n, d, generator=g)
    z = torch.relu(torch.randn(n, d_sae, generator=g))
    z[:, 0], z[:, 1], z[:, 2] = 0.0, 1.0, 0.0
    z[:2, 2] = 1.0
    return x, x_hat, z


def one_shot(x, x_hat, z):
    x, x_hat = x.double(), x_hat.double()
    err = (x - x_hat).square().sum()
    fvu = err / (x - x.mean(0)).square().sum()
    freq = (z != 0).double().mean(0)
    return {"fvu": fvu, "explained_variance": 1 - fvu, "mse": (x - x_hat).square().mean(),
            "cosine": F.cosine_similarity(x, x_hat, dim=-1).mean(),
            "rel_bias": x_hat.square().sum() / (x * x_hat).sum(), "l0": (z != 0).sum(1).double().mean(),
            "dead_fraction": (freq == 0).double().mean(), "dense_fraction_10": (freq > 0.1).double().mean()}


def streamed(x, x_hat, z, sizes=BATCHES):
    stats = ReconstructionStats(x.shape[1], z.shape[1])
    for xb, hb, zb in zip(x.split(sizes), x_hat.split(sizes), z.split(sizes)):
        stats.update(xb, hb, zb)
    return stats


def test_streamed_in_uneven_batches_equals_one_shot_float64():
    x, x_hat, z = sample()
    stats = streamed(x, x_hat, z)
    expected = one_shot(x, x_hat, z)
    result = stats.result()
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(float(value), rel=1e-12), name
    assert stats.n == x.shape[0]
    assert torch.allclose(stats.mean, x.double().mean(0), rtol=1e-12)
    assert torch.equal(stats.freq(), (z != 0).double().mean(0))
    assert result["dead_fraction"] == 0.1 and result["dense_fraction_10"] > 0.1  # the sample's dead and dense latents


def test_fvu_centres_each_dimension_on_its_own_mean():
    x, x_hat, z = sample()
    fvu = streamed(x, x_hat, z).result()["fvu"]
    err = float((x - x_hat).double().square().sum())
    assert fvu == pytest.approx(err / float((x - x.mean(0)).double().square().sum()), rel=1e-12)
    scalar_mean = err / float((x - x.mean()).double().square().sum())
    assert fvu > 10 * scalar_mean  # dimensions 20 apart: one scalar mean would inflate the denominator


def test_without_codes_only_the_reconstruction_figures():
    x, x_hat, _ = sample()
    stats = ReconstructionStats(d=x.shape[1])
    stats.update(x, x_hat)
    assert set(stats.result()) == {"fvu", "explained_variance", "mse", "cosine", "rel_bias"}
    with pytest.raises(ValueError, match="no evaluation tokens"):
        ReconstructionStats(d=3).result()


def _rank_half(rank: int, init_file: str, queue) -> None:
    """One of two gloo ranks: stream this rank's half of the sample, all-reduce, report the result."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    x, x_hat, z = sample()
    half = slice(0, 7) if rank == 0 else slice(7, None)  # unequal shares
    stats = streamed(x[half], x_hat[half], z[half], sizes=(4, 3) if rank == 0 else (20, 13))
    stats.all_reduce()
    queue.put((rank, stats.n, stats.result(), stats.mean.tolist(), stats.freq().tolist()))  # plain data: ranks exit
    distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.timeout(120)
def test_all_reduce_over_two_ranks_equals_one_process(tmp_path):
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    start_processes(_rank_half, args=(str(tmp_path / "pg"), queue), nprocs=2, start_method="spawn")
    x, x_hat, z = sample()
    expected = one_shot(x, x_hat, z)
    for _ in range(2):
        rank, n, result, mean, freq = queue.get()
        assert n == x.shape[0], rank
        for name, value in expected.items():
            assert result[name] == pytest.approx(float(value), rel=1e-12), (rank, name)
        assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.double().mean(0), rtol=1e-12)
        assert freq == (z != 0).double().mean(0).tolist()
