import os

import pytest
import torch

# Tests never talk to wandb's servers or a real Hub.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def one_thread():
    """For tests of tiny tensors: thread start-up costs more than it saves, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
