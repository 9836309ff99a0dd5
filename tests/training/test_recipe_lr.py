"""The properties the TopK family's LR rule relies on (docs/training-recipe.md, docs/logbook.md), and LR grids
as multiples of it in sweeps."""

import pytest
import torch

from visae.sae import SAEConfig, create_sae
from visae.training.config import MAX_RELATIVE_STEP, TrainConfig, default_lr, resolve_defaults
from visae.training.frontier import plot_frontier
from visae.training.schedule import WarmupDecay
from visae.training.sweep import SweepConfig, SweepGrid, expand_grid
from visae.training.sweep_results import mark_best
from visae.training.trainer import SAETrainer


def decoder_row_step(d_in: int, d_sae: int = 8192) -> float:
    """The mean distance a unit-norm decoder row moves in the first Adam step at the recipe LR (no warm-up)."""
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=32))
    x = torch.randn(1024, d_in) * 3.0 + 1.0
    sae.init_from_data(x)
    trainer = SAETrainer(sae, lr=default_lr("topk", d_sae, d_in), betas=(0.9, 0.999), grad_clip=0.0,
                         schedule=WarmupDecay(total_steps=10, warmup_steps=0, decay_steps=0),
                         sparsity_warmup_fraction=0.0, dead_after=10**9, autocast_dtype=None)
    before = sae.W_dec.detach().clone()
    trainer.step(x, 0)
    moved = (sae.W_dec.detach() - before).norm(dim=1)
    return float(moved[moved > 0].mean())


def test_recipe_lr_moves_unit_norm_decoder_rows_alike_at_every_input_width():
    """Adam moves every entry by about the LR, so a row of d_in entries by about lr * sqrt(d_in): the rule's
    sqrt(768 / d_in) keeps the relative step of a unit-norm row the same at every d_in (what the base LR was
    measured on: docs/logbook.md)."""
    steps = {d_in: decoder_row_step(d_in) for d_in in (96, 384, 768)}
    relative = default_lr("topk", 8192, 768) * 768**0.5
    for d_in, step in steps.items():
        assert step == pytest.approx(relative, rel=0.15), (d_in, steps)


def test_recipe_lr_caps_the_relative_step_of_small_dictionaries():
    assert default_lr("topk", 128, 32) * 32**0.5 == pytest.approx(MAX_RELATIVE_STEP)
    assert default_lr("topk", 1536, 96) * 96**0.5 < MAX_RELATIVE_STEP  # the toy model's quickstart: uncapped


def test_lr_scale_multiplies_the_recipe_lr_and_explicit_lrs_win():
    cfg = resolve_defaults(TrainConfig(store="s", hook="h", lr_scale=2.0), d_in=96)
    assert cfg.lr == pytest.approx(2 * default_lr("topk", 1536, 96))
    assert resolve_defaults(TrainConfig(store="s", hook="h", lr=1e-3, lr_scale=2.0), d_in=96).lr == 1e-3
    grid = SweepGrid(k=[16, 32], lr_scale=[0.5, 1.0, 2.0])
    members = expand_grid(SweepConfig(store="s", hook="h", grid=grid))
    assert [m.run_name for m in members if m.k == 16] == ["topk-k16-x16-lrx0.5", "topk-k16-x16", "topk-k16-x16-lrx2"]
    lrs = [resolve_defaults(m, 96).lr for m in members[:3]]
    assert lrs == pytest.approx([scale * default_lr("topk", 1536, 96) for scale in (0.5, 1.0, 2.0)])


def test_best_lr_is_marked_per_width_and_k(tmp_path):
    rows = [{"name": f"k{k}-n{n}-lrx{s}", "architecture": "topk", "k": k, "sparsity_coefficient": "", "d_sae": n,
             "lr_scale": s, "l0": k, "fvu": fvu} for k, n, s, fvu in
            [(16, 512, 0.5, 0.30), (16, 512, 1, 0.20), (16, 512, 2, 0.25), (32, 512, 1, 0.15), (32, 512, 2, 0.10),
             (16, 1024, 1, 0.12)]]
    marked = mark_best(rows)
    assert [r["name"] for r in marked if r["best_lr"]] == ["k16-n512-lrx1", "k32-n512-lrx2", "k16-n1024-lrx1"]
    assert plot_frontier(marked, tmp_path / "frontier.png").stat().st_size > 0


def test_topk_sae_schedule_decays_over_half_the_run_and_counts_dead_after_5_percent():
    """The TopK family's SAEs decay the LR over the last half of the run and call a latent dead after 5% of a
    short budget without firing: latents that stop firing while the LR is high come back as it decays, and AuxK
    reaches them sooner; with that, Adam's beta2 is 0.99 (docs/logbook.md, entry 6). Transcoders, crosscoders
    and the L1 / JumpReLU SAEs keep the anchors' 0.2, 10% and beta2 0.999; explicit values win."""
    from visae.sae.registry import architecture_traits
    from visae.training.build import build_trainer

    for arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        cfg = resolve_defaults(TrainConfig(store="s", hook="h", architecture=arch, total_tokens=4_000_000), 96)
        assert (cfg.lr_decay_fraction, cfg.dead_max_fraction, cfg.adam_betas) == (0.5, 0.05, [0.9, 0.99])
        sae = create_sae(SAEConfig(architecture=arch, d_in=96, d_sae=1536, k=32))
        trainer = build_trainer(sae, cfg, total_steps=976, data_parallel=False)
        assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
        schedule = trainer.scheduler.lr_lambdas[0]
        assert schedule.decay_steps == 488 and schedule(488) == 1.0 and schedule(732) == pytest.approx(0.5)
        assert trainer.dead.dead_after == 200_000
    for arch in ("topk_transcoder", "batchtopk_transcoder", "standard", "jumprelu"):
        cfg = resolve_defaults(TrainConfig(store="s", hook="h", architecture=arch), 96)
        assert (cfg.lr_decay_fraction, cfg.dead_max_fraction) == (0.2, 0.1), arch
        assert cfg.adam_betas is not None and cfg.adam_betas[1] == 0.999, arch
    assert (architecture_traits("crosscoder").lr_decay, architecture_traits("crosscoder").dead_window) == (0.2, 0.1)
    explicit = TrainConfig(store="s", hook="h", lr_decay_fraction=0.2, dead_max_fraction=0.1)
    assert (resolve_defaults(explicit, 96).lr_decay_fraction, resolve_defaults(explicit, 96).dead_max_fraction) == (
        0.2, 0.1)
