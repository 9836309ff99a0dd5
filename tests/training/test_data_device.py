"""Training reads through the loader's device path on a GPU, the host path on the CPU."""

import torch

from visae.training.data import loader_device


def test_batches_are_built_on_the_training_gpu_and_on_the_host_for_cpu_training():
    assert loader_device(torch.device("cpu")) is None
    assert loader_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
