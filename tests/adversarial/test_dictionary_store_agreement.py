"""Issue 17: `visae eval` checks a dictionary against the store it is evaluated on. A store of another model or
hook than the dictionary's cfg.json metadata names is refused, naming both sides; `--allow-mismatch` lets a
deliberate cross-model study through and records it in eval/summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_fixtures import TINY_SPEC, tiny_store

from visae.sae import SAEConfig, create_sae
from visae.service.cli import main

HOOK = "blocks.0.resid_post"
OTHER_MODEL = "timm:vit_small_patch14_reg4_dinov2.lvd142m"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("store"), n_images=16)[0]


def dictionary(folder: Path, d_in: int, **metadata) -> str:
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=32, k=4,
                               metadata={"model_name": TINY_SPEC, "hook_name": HOOK, "token_kind": "all",
                                         **metadata}))
    sae.save(folder)
    return str(folder)


def run_eval(sae_dir: str, store, *extra: str) -> int:
    return main(["eval", sae_dir, "--store", store.path, "--no-model-passes", "--no-progress", "--top-k", "2",
                 "--n-quantiles", "2", *extra])


def test_a_store_of_another_model_is_refused(store, tmp_path, capsys):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK), model_name=OTHER_MODEL)
    assert run_eval(sae_dir, store) == 2
    err = capsys.readouterr().err
    assert "visae eval: error:" in err and "does not match the store" in err
    assert f"trained on {OTHER_MODEL}, the store holds {TINY_SPEC}" in err and "--allow-mismatch" in err
    assert not (Path(sae_dir) / "eval").exists()


def test_a_store_without_the_dictionary_hook_is_refused(store, tmp_path, capsys):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK), hook_name="blocks.1.resid_post")
    assert run_eval(sae_dir, store) == 2
    err = capsys.readouterr().err
    assert "hook: the dictionary was trained on blocks.1.resid_post" in err and HOOK in err


def test_other_weights_are_refused(store, tmp_path, capsys):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK), model_state_sha256="0" * 64)
    assert run_eval(sae_dir, store) == 2
    assert "weights hash 000000000000... differs" in capsys.readouterr().err


def test_a_width_mismatch_is_refused_even_when_allowed(store, tmp_path, capsys):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK) + 1)
    assert run_eval(sae_dir, store, "--allow-mismatch") == 2
    assert f"d_in={store.d(HOOK) + 1}" in capsys.readouterr().err


def test_allow_mismatch_runs_and_records_it(store, tmp_path):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK), model_name=OTHER_MODEL)
    assert run_eval(sae_dir, store, "--allow-mismatch") == 0
    summary = json.loads((Path(sae_dir) / "eval" / "summary.json").read_text())
    assert summary["allowed_mismatch"] == [f"model: the dictionary was trained on {OTHER_MODEL}, the store holds "
                                           f"{TINY_SPEC}"]


def test_a_matching_dictionary_records_no_mismatch(store, tmp_path):
    sae_dir = dictionary(tmp_path / "sae", store.d(HOOK))
    assert run_eval(sae_dir, store) == 0
    assert "allowed_mismatch" not in json.loads((Path(sae_dir) / "eval" / "summary.json").read_text())
