"""`visae zoo ACTION`: the models visae ships. `visae zoo train-toy` reproduces the toy ViT (`visae:toy-vit-shapes`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from visae.activation_store.models.toy_release import write_toy_release
from visae.activation_store.models.toy_training import ToyTrainConfig, train_toy_vit
from visae.service.cli import Command, Group


@dataclass
class ToyTrainOptions(ToyTrainConfig):
    """ToyTrainConfig plus where the release goes."""

    out: str = "toy-vit-shapes"  # output folder for the weights and the model card
    probe_images: int = 3000  # images for the register probes reported in the model card


def train_toy(options: ToyTrainOptions) -> int:
    cfg = ToyTrainConfig(**{f.name: getattr(options, f.name) for f in fields(ToyTrainConfig)})
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={cfg.steps}, batch_size={cfg.batch_size}")
    torch.set_num_threads(cfg.threads)  # evaluation and probes too
    module, record = train_toy_vit(cfg)
    weights, card = write_toy_release(module, cfg, record, options.out, probe_images=options.probe_images)
    print(f"trained in {record['train_seconds'] / 60:.1f} min\nweights: {weights}\nmodel card: {card}")
    print(f"use it with: --model visae:toy-vit-shapes --weights {weights}")
    return 0


COMMAND = Group(help="models shipped with visae", actions={
    "train-toy": Command(
        ToyTrainOptions, train_toy, help="train the toy ViT on generated shapes (deterministic on CPU from its seed)",
        description="Train visae:toy-vit-shapes from scratch and write OUT/toy-vit-shapes.safetensors plus its model "
                    "card. With the defaults this reproduces the shipped weights."),
})
