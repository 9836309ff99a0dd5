"""A TopK-family cfg.json without `k` used to load as k=32, silently (in Python, `visae eval` and `visae serve`)."""

from __future__ import annotations

import json

import pytest
import torch

from visae.sae import SAE, SAEConfig, create_sae
from visae.service.catalog import Catalog
from visae.service.cli import main

TOPK_FAMILY = ["topk", "batchtopk", "matryoshka_batchtopk"]


def saved(tmp_path, architecture: str = "topk", k: int = 4):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture=architecture, d_in=8, d_sae=16, k=k))
    folder = sae.save(tmp_path / "sae")
    return folder, json.loads((folder / "cfg.json").read_text())


def rewrite(folder, cfg: dict) -> None:
    (folder / "cfg.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("architecture", TOPK_FAMILY)
def test_a_topk_family_cfg_without_k_is_refused_naming_the_file_and_field(tmp_path, architecture):
    folder, cfg = saved(tmp_path)
    cfg.pop("k", None)
    cfg["architecture"] = architecture
    cfg.get("metadata", {}).pop("visae_training_config", None)  # nothing else records the k
    rewrite(folder, cfg)
    with pytest.raises(ValueError, match=r"cfg\.json.*needs the field `k`.*missing") as refused:
        SAE.load(folder)
    assert str(folder / "cfg.json") in str(refused.value) and architecture in str(refused.value)


def test_the_k_recorded_only_in_training_metadata_is_not_enough(tmp_path):
    """visae_training_config is what the SAE was trained with; the file's own `k` is the contract, and it is gone."""
    folder, cfg = saved(tmp_path, k=4)
    del cfg["k"]
    assert cfg["metadata"]["visae_training_config"]["k"] == 4
    rewrite(folder, cfg)
    with pytest.raises(ValueError, match="needs the field `k`"):
        SAE.load(folder)


@pytest.mark.parametrize("bad", [0, -3, 17, 2.5, "8", True, None])
def test_a_k_that_is_not_a_whole_number_in_range_is_refused(tmp_path, bad):
    folder, cfg = saved(tmp_path)
    cfg["k"] = bad
    rewrite(folder, cfg)
    with pytest.raises(ValueError, match=r"cfg\.json.*`k`"):
        SAE.load(folder)


def test_a_topk_cfg_with_k_still_loads_with_that_k(tmp_path):
    folder, cfg = saved(tmp_path, k=4)
    cfg["k"] = 4.0  # a whole number written as a float by some tool
    rewrite(folder, cfg)
    assert SAE.load(folder).cfg.k == 4


def test_an_architecture_without_k_does_not_need_it(tmp_path):
    torch.manual_seed(0)
    folder = create_sae(SAEConfig(architecture="standard", d_in=8, d_sae=16)).save(tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.pop("k", None)
    rewrite(folder, cfg)
    assert SAE.load(folder).cfg.d_sae == 16


def test_serve_and_eval_refuse_it_too(tmp_path, capsys):
    folder, cfg = saved(tmp_path)
    del cfg["k"]
    rewrite(folder, cfg)
    with pytest.raises(ValueError, match="needs the field `k`"):
        Catalog.load([("tiny", folder)])
    assert main(["eval", str(folder), "--store", str(tmp_path / "no-store.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("visae eval: error: ") and "needs the field `k`" in err and "cfg.json" in err
