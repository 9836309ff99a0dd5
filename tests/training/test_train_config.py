"""Training config: YAML + key=value overrides, recipe defaults, clear refusals (bad fields, changed resume)."""

import pytest
import yaml

from visae.service.cli import run_command
from visae.training.config import TrainConfig, default_lr, load_config, resolve_defaults
from visae.training.run import resume, train
from visae.training.schedule import sparsity_scale, warmup_decay
from visae.training.synthetic import synthetic_store

HOOK = "blocks.0.resid_post"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"store": "s.zarr", "hook": HOOK, "k": 16, "lr": 1e-3}))
    cfg = load_config(path, ["k=64", "sae_params.k_aux=128", "adam_betas=[0.0,0.99]"])
    assert isinstance(cfg, TrainConfig)
    assert (cfg.k, cfg.lr, cfg.sae_params, cfg.adam_betas) == (64, 1e-3, {"k_aux": 128}, [0.0, 0.99])


def test_token_counts_written_in_exponent_form_are_whole_numbers(tmp_path):
    from visae.training.sweep import load_sweep_config

    path = tmp_path / "c.yaml"
    path.write_text("store: s.zarr\nhook: h\ntotal_tokens: 2.0e7\n")
    assert load_config(path).total_tokens == 20_000_000
    assert load_config(path, ["total_tokens=4e6"]).total_tokens == 4_000_000
    sweep = load_sweep_config(None, ["store=s", "hook=h", "grid.d_sae=[1.5e3,3072]", "grid.lr=[1e-3,null]"])
    assert sweep.grid.d_sae == [1500, 3072] and sweep.grid.lr == [1e-3, None]
    with pytest.raises(ValueError, match="total_tokens"):
        load_config(None, ["store=s", "hook=h", "total_tokens=4.5"])


@pytest.mark.parametrize("override, message", [
    ("nonsense=1", "nonsense"),
    ("k=many", "k"),
    ("architecture=gated", "architecture"),
    ("tokens=pixels", "token kind"),
    ("total_tokens=10", "total_tokens"),
])
def test_bad_values_are_refused_by_name(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["store=s", f"hook={HOOK}", override])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_recipe_defaults_scale_lr_with_width_and_input_dimension():
    cfg = resolve_defaults(load_config(None, ["store=s", f"hook={HOOK}", "expansion_factor=64"]), d_in=256)
    assert cfg.d_sae == 2**14 and cfg.lr == pytest.approx(8e-4 * 3**0.5)
    assert default_lr("topk", 2**16, 768) == pytest.approx(4e-4)
    assert default_lr("topk", 2**14, 3072) == pytest.approx(4e-4)
    assert default_lr("standard", 2**14, 96) == pytest.approx(5e-5)  # the L1 anchor's LR, no d_in factor
    jump = resolve_defaults(load_config(None, ["store=s", f"hook={HOOK}", "architecture=jumprelu"]), d_in=64)
    assert jump.adam_betas == [0.0, 0.999]
    assert jump.sparsity_warmup_fraction is not None and jump.sparsity_warmup_fraction > 0


def test_schedule_warms_up_holds_and_decays():
    s = warmup_decay(total_steps=1000, warmup_steps=1000, warmup_max_fraction=0.05, decay_fraction=0.2)
    assert s.warmup_steps == 50  # capped for a short run
    assert s(0) == pytest.approx(1 / 50) and s(49) == 1.0 and s(500) == 1.0
    assert s(900) == pytest.approx(0.5) and s(999) == pytest.approx(0.005)
    assert sparsity_scale(0, 1000, 0.1) == pytest.approx(0.01) and sparsity_scale(500, 1000, 0.1) == 1.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return (synthetic_store(str(root / "a.zarr"), d=32, n_images=32, seed=0),
            synthetic_store(str(root / "b.zarr"), d=32, n_images=32, seed=1))


def _small(store, tmp_path, **extra):
    base = [f"store={store.path}", f"hook={HOOK}", "k=4", "expansion_factor=2", "batch_size=128",
            "total_tokens=2560", "checkpoint_every_steps=5", "eval_tokens=512", f"out_dir={tmp_path}",
            "run_name=r", "wandb_mode=disabled"]
    return load_config(None, base + [f"{k}={v}" for k, v in extra.items()])


def test_store_smaller_than_one_batch_is_refused(stores, tmp_path):
    tokens = stores[0].n_images * stores[0].layout.n_tokens
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(_small(stores[0], tmp_path, batch_size=tokens + 1, total_tokens=4 * (tokens + 1)))


def _interrupted_run(store, tmp_path):
    """A run folder holding a checkpoint, as left by a killed process."""
    import visae.training.run as trainer

    class Stop(Exception):
        pass

    real = trainer._checkpoint

    def checkpoint_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Stop

    trainer._checkpoint = checkpoint_then_die
    try:
        with pytest.raises(Stop):
            train(_small(store, tmp_path))
    finally:
        trainer._checkpoint = real
    return tmp_path / "r"


def test_resume_refuses_changed_config_and_store(stores, tmp_path):
    a, b = stores
    run_dir = _interrupted_run(a, tmp_path)
    with pytest.raises(ValueError, match=r"config differs.*k: 4 -> 8"):
        resume(run_dir, ["k=8"])
    with pytest.raises(ValueError, match="store at .* has fingerprint"):
        resume(run_dir, [f"store={b.path}"])
    with pytest.raises(FileExistsError, match="--resume"):
        train(_small(a, tmp_path))
    assert resume(run_dir, ["wandb_mode=disabled"]).joinpath("cfg.json").exists()


def _command(argv):
    """`visae train ARGV`, its errors raised rather than reported."""
    return run_command(["train", *argv])


def test_command_errors_name_the_problem(stores, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a visae training run"):
        _command(["--resume", str(tmp_path / "nothing")])
    with pytest.raises(ValueError, match="has no hook 'blocks.9.mlp_out'"):
        _command(["--store", stores[0].path, "--hook", "blocks.9.mlp_out"])
    with pytest.raises(ValueError, match="give a config file"):
        _command([])


def test_negative_block_index_resolves_against_the_store(stores):
    from visae.training.data import open_store

    assert open_store(stores[0].path, "blocks.-1.resid_post")[1] == HOOK
    with pytest.raises(ValueError, match="has no hook 'blocks.0.mlp_out'; it holds blocks.0.resid_post"):
        open_store(stores[0].path, "blocks.-1.mlp_out")
