"""Sparse vs dense TopK decoder, forward + backward, on this CPU (issue 4).

Decoder only: dense = scatter the code into [batch, d_sae] and matmul (6·B·n·d FLOP for forward +
both gradients); sparse = sae.kernels.sparse_decode (6·B·k·d FLOP). Also a whole TopK training step
(encoder GEMM + topk + decoder, forward + backward): `TopKSAE.training_losses` (sparse encoder
backward and sparse decoder) against the same step through dense autograd, against a bare encoder GEMM of the same
shapes: the FLOP floor of a sparse step is about 2dn + 8kd per token (docs/training-recipe.md).
Prints one JSON object; all figures are ratios of timings taken in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from visae.sae import SAEConfig, TrainState, create_sae
from visae.sae.kernels.sparse_decode import decode_topk


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    d, n, k, batch = args.d, args.d * args.expansion, args.k, args.batch

    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(n, d, generator=g).requires_grad_()
    W_enc = torch.randn(d, n, generator=g).mul_(d ** -0.5).requires_grad_()
    x = torch.randn(batch, d, generator=g)
    grad_out = torch.randn(batch, d, generator=g)
    values = torch.rand(batch, k, generator=g).requires_grad_()
    indices = torch.rand(batch, n, generator=g).topk(k, dim=1).indices

    def dense_decoder():
        z = torch.zeros(batch, n).scatter(1, indices, values)
        (z @ W_dec).backward(grad_out)

    def sparse_decoder():
        decode_topk(values, indices, W_dec).backward(grad_out)

    sae = create_sae(SAEConfig(architecture="topk", d_in=d, d_sae=n, k=k))
    sae.init_from_data(x)

    def sparse_step():
        sae.zero_grad(set_to_none=True)
        sae.training_losses(x, TrainState()).total.backward()
        sae.after_backward()

    def dense_step():
        pre = x @ W_enc
        top, idx = pre.topk(k, dim=1, sorted=False)
        recon = torch.zeros_like(pre).scatter(1, idx, top.relu()) @ W_dec
        (recon - x).pow(2).sum().backward()

    def encoder_gemm():
        _ = x @ W_enc.detach()

    t_dense = timed(dense_decoder, args.repeats)
    t_sparse = timed(sparse_decoder, args.repeats)
    t_step_dense = timed(dense_step, args.repeats)
    t_step_sparse = timed(sparse_step, args.repeats)
    t_gemm = timed(encoder_gemm, args.repeats)

    floor_flop = 2 * d * n + 8 * k * d  # per token, docs/training-recipe.md
    print(json.dumps({
        "shape": {"d": d, "d_sae": n, "k": k, "batch": batch, "threads": torch.get_num_threads()},
        "decoder_fwd_bwd_seconds": {"dense": round(t_dense, 4), "sparse": round(t_sparse, 4)},
        "decoder_speedup": round(t_dense / t_sparse, 1),
        "decoder_flop_ratio": n / k,
        "train_step_seconds": {"dense": round(t_step_dense, 4), "sparse": round(t_step_sparse, 4)},
        "train_step_speedup": round(t_step_dense / t_step_sparse, 2),
        "train_step_flop_ratio": round(10 * d * n / floor_flop, 2),
        "encoder_gemm_seconds": round(t_gemm, 4),
        "sparse_step_vs_floor": round((t_gemm * floor_flop / (2 * d * n)) / t_step_sparse, 3),
    }))


if __name__ == "__main__":
    main()
