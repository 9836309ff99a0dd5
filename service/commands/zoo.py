"""`visae zoo ...`: the models visae ships. `visae zoo train-toy` reproduces the toy ViT (`visae:toy-vit-shapes`)."""

from __future__ import annotations

import argparse

import torch

from visae.activation_store.models.toy_release import write_toy_release
from visae.activation_store.models.toy_training import ToyTrainConfig, train_toy_vit
from visae.core.config import load_typed_config


def register(subparsers) -> None:
    zoo = subparsers.add_parser("zoo", help="models shipped with visae")
    actions = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train-toy",
        help="train the toy ViT on generated shapes (deterministic on CPU from its seed)",
        description="Train visae:toy-vit-shapes from scratch and write OUT/toy-vit-shapes.safetensors plus its model "
        "card. With the defaults this reproduces the shipped weights.",
    )
    train.add_argument("--out", default="toy-vit-shapes", help="output folder (default: ./toy-vit-shapes)")
    train.add_argument("--steps", type=int, help=f"training steps (default {ToyTrainConfig.steps})")
    train.add_argument("--seed", type=int, help=f"seed of model init and training data (default {ToyTrainConfig.seed})")
    train.add_argument("--config", help="YAML file with ToyTrainConfig fields")
    train.add_argument("--probe-images", type=int, default=3000, help="images for the register probes in the card")
    train.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. batch_size=64 model.depth=4")
    train.set_defaults(func=train_toy)


def load_train_config(args: argparse.Namespace) -> ToyTrainConfig:
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        raise ValueError(f"overrides must be key=value, got {bad}")
    return load_typed_config(ToyTrainConfig, args.config, {"steps": args.steps, "seed": args.seed}, args.overrides)


def train_toy(args: argparse.Namespace) -> int:
    cfg = load_train_config(args)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={cfg.steps}, batch_size={cfg.batch_size}")
    torch.set_num_threads(cfg.threads)  # evaluation and probes too: one thread copes best with a busy CPU
    module, record = train_toy_vit(cfg)
    weights, card = write_toy_release(module, cfg, record, args.out, probe_images=args.probe_images)
    print(f"trained in {record['train_seconds'] / 60:.1f} min\nweights: {weights}\nmodel card: {card}")
    print(f"use it with: --model visae:toy-vit-shapes --weights {weights}")
    return 0
