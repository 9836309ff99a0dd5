"""An architecture declared in one place (its class and traits) reaches every list derived from the registry:
config validation, the CLI's choices, sweep grids and recipe defaults, saving/loading and the Hub manifest."""

import json
import math

import pytest
import torch

from visae.sae import SAE, ArchitectureTraits, SAEConfig, TopKSAE, architecture_class, architecture_names, create_sae
from visae.sae.hub import default_sae_id, manifest_entry
from visae.sae.registry import register, unregister
from visae.training.build import sae_config
from visae.training.config import TrainConfig, default_run_name, load_config, resolve_defaults
from visae.training.sweep import SweepConfig, SweepGrid, expand_grid
from visae.training.sweep_results import result_row

NAME = "test_topk_variant"
HOOK = "blocks.1.resid_post"
# Unlike TopK's own: another base LR, no d_in scaling, a sparsity warm-up and other Adam betas.
TRAITS = ArchitectureTraits(sparsity="k", base_lr=3e-4, lr_scales_with_d_in=False, sparsity_warmup=0.1,
                            adam_betas=(0.5, 0.99))


@pytest.fixture
def variant():
    """A TopK variant registered for one test only."""

    class TopKVariantSAE(TopKSAE):
        architecture = NAME
        traits = TRAITS

    yield TopKVariantSAE
    unregister(NAME)


def test_config_validation_accepts_it_and_names_it_when_refusing(variant):
    assert SAEConfig(architecture=NAME, d_in=16, d_sae=64, k=4).architecture == NAME
    with pytest.raises(ValueError, match="k must be in 1..d_sae"):
        SAEConfig(architecture=NAME, d_in=16, d_sae=64, k=65)
    assert load_config(None, ["store=s", f"hook={HOOK}", f"architecture={NAME}"]).architecture == NAME
    with pytest.raises(ValueError, match=f"unknown SAE architecture 'gated'; choose one of .*{NAME}"):
        SAEConfig(architecture="gated")
    with pytest.raises(ValueError, match=f"unknown architecture 'gated'; choose one of .*{NAME}"):
        load_config(None, ["store=s", f"hook={HOOK}", "architecture=gated"])


def test_cli_choices_list_it(variant):
    assert NAME in architecture_names() and "topk" in architecture_names()


def test_recipe_defaults_and_run_name_come_from_its_traits(variant):
    cfg = resolve_defaults(TrainConfig(store="s", hook=HOOK, architecture=NAME, k=8, d_sae=4096), d_in=96)
    assert cfg.lr == pytest.approx(3e-4 * math.sqrt(2**14 / 4096))
    assert (cfg.sparsity_warmup_fraction, cfg.adam_betas) == (0.1, [0.5, 0.99])
    assert default_run_name(cfg) == f"{HOOK}-all-{NAME}-k8-n4096"
    assert sae_config(cfg, {"d_in": 96}, {}).k == 8


def test_sweep_grid_applies_k_and_its_recipe_lr(variant):
    grid = SweepGrid(architecture=[NAME, "standard"], k=[4, 8], sparsity_coefficient=[None, 0.5], d_sae=[384])
    members = expand_grid(SweepConfig(store="s", hook=HOOK, grid=grid))
    mine = [m for m in members if m.architecture == NAME]
    assert [(m.run_name, m.k, m.sparsity_coefficient) for m in mine] == [
        (f"{NAME}-k4-n384", 4, None), (f"{NAME}-k8-n384", 8, None)]
    assert len(members) == 4  # the coefficient is ignored for it, k for standard
    resolved = resolve_defaults(mine[0], d_in=96)
    assert resolved.lr == pytest.approx(3e-4 * math.sqrt(2**14 / 384))
    assert result_row(resolved, {})["k"] == 4


def test_save_load_round_trip_and_hub_manifest(variant, tmp_path):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture=NAME, d_in=16, d_sae=64, k=4, metadata={"hook_name": HOOK}))
    assert type(sae) is variant
    x = torch.randn(32, 16) * 3
    sae.init_from_data(x)
    folder = sae.save(tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == NAME
    loaded = SAE.load(folder)
    assert type(loaded) is variant
    with torch.no_grad():
        assert torch.allclose(loaded(x), sae(x), atol=1e-5)
    sae_id = default_sae_id(cfg)
    assert sae_id == f"{HOOK}/{NAME}-k4-x4"
    entry = manifest_entry(folder, sae_id)
    assert (entry["architecture"], entry["file_architecture"], entry["k"]) == (NAME, NAME, 4)


def test_unregistered_outside_its_tests():
    assert NAME not in architecture_names()
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        SAEConfig(architecture=NAME)


def test_every_architecture_declares_its_own_traits():
    for name in architecture_names():
        assert isinstance(architecture_class(name).__dict__.get("traits"), ArchitectureTraits), name
    with pytest.raises(TypeError, match="must declare its own traits"):
        type("Untraited", (TopKSAE,), {"architecture": "test_untraited"})
    assert "test_untraited" not in architecture_names()


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="'topk' is already registered"):
        register(type("Impostor", (), {"architecture": "topk", "traits": TRAITS}))
