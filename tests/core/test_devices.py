import pytest
import torch

from visae.core.devices import resolve_device


def test_auto_is_the_gpu_of_this_rank_when_one_is_visible_else_the_cpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_uses_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="local rank 2 but only 2 CUDA GPU"):
        resolve_device("auto")


@pytest.mark.parametrize("name", ["potato", "gpu", "cuda:x", "cpu:3", "mps:0", ""])
def test_unknown_names_are_refused_with_the_valid_forms(name):
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_a_gpu_that_is_not_there_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is visible.*auto, cpu, cuda or cuda:N"):
        resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"'cuda:7' asked for but only 1 CUDA GPU\(s\) are visible \(cuda:0 to"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
