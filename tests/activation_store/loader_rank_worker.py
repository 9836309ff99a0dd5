"""Run under torchrun by test_loader_distributed.py: each rank writes the (image, position) ids of the tokens
it was served, and of the batches it saw after resuming from a saved state."""

import sys

import numpy as np
import torch.distributed as dist

from visae.activation_store.loader import ActivationLoader


def main(store_path: str, out_prefix: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = ActivationLoader(store_path, "blocks.0.resid_post", batch_size=16, epochs=2, buffer_tokens=60)
    assert (loader.rank, loader.world_size) == (rank, 2)
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    state = loader.state_dict()
    tail = list(it)
    resumed = ActivationLoader(store_path, "blocks.0.resid_post", batch_size=16, epochs=2, buffer_tokens=60)
    resumed.load_state_dict(state)
    again = list(resumed)
    ids = lambda batches: np.concatenate([b[:, :2].numpy() for b in batches]).astype(int)  # noqa: E731
    np.save(f"{out_prefix}{rank}.npy", ids(head + tail))
    np.save(f"{out_prefix}{rank}_resumed.npy", ids(again))
    np.save(f"{out_prefix}{rank}_tail.npy", ids(tail))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
