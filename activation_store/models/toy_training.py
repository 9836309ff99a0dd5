"""Train the toy ViT on the `shapes` source, deterministically on CPU from one seed.

Training images are drawn fresh for every step from `shapes:n=steps*batch_size,seed=seed` (so there is no
overfitting to a fixed set), in index order, by a DataLoader. Held-out images come from a different seed.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from visae.activation_store.models.toy_vit import ToyViT, ToyViTConfig
from visae.activation_store.sources.shapes import ShapesSource

HELD_OUT_SEED_OFFSET = 1_000


@dataclass
class ToyTrainConfig:
    seed: int = 0  # seed of the initialisation and of the training images
    steps: int = 3600  # training steps
    batch_size: int = 64  # images per step
    # 2e-3 left position and shape near chance for the first ~1000 steps
    lr: float = 5e-4  # peak learning rate (AdamW, linear warm-up then cosine decay)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_steps: int = 50  # steps of linear LR warm-up
    grad_clip: float = 1.0  # max global grad norm
    image_size: int = 64  # side of the generated images, in pixels
    eval_images: int = 2000  # held-out images for the accuracies in the model card
    num_workers: int = 1  # DataLoader workers rendering the training images
    # fixed, so results do not depend on the core count; one thread also copes best with a busy CPU
    threads: int = 1  # torch threads
    model: ToyViTConfig = field(default_factory=ToyViTConfig)  # the model's architecture

    def train_spec(self) -> str:
        return f"shapes:n={self.steps * self.batch_size},seed={self.seed},size={self.image_size}"

    def held_out_spec(self) -> str:
        return f"shapes:n={self.eval_images},seed={self.seed + HELD_OUT_SEED_OFFSET},size={self.image_size}"


class FactorImages(Dataset):
    """(uint8 pixels [3,H,W], factor targets [n_factors]) for each image of a shapes source."""

    def __init__(self, source: ShapesSource, factor_names: list[str]):
        self.source, self.factor_names = source, factor_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(np.asarray(self.source[i].image).copy()).permute(2, 0, 1)
        factors = self.source.factors(i)
        return pixels, torch.tensor([factors[name] for name in self.factor_names])


def normalise(pixels: torch.Tensor, cfg: ToyViTConfig) -> torch.Tensor:
    """uint8 [B,3,H,W] -> the model's float input (the same mapping as the toy model's Preprocess)."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def factor_loader(spec: str, factor_names: list[str], batch_size: int, num_workers: int) -> DataLoader:
    """Batches of a shapes source in index order (a DataLoader worker renders them while the model trains)."""
    return DataLoader(FactorImages(ShapesSource.from_spec(spec), factor_names), batch_size=batch_size,
                      shuffle=False, num_workers=num_workers)


def lr_at(step: int, cfg: ToyTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def factor_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    losses = (nn.functional.cross_entropy(out, targets[:, j]) for j, out in enumerate(logits.values()))
    return functools.reduce(operator.add, losses)


def train_toy_vit(cfg: ToyTrainConfig) -> tuple[ToyViT, dict]:
    """Train from scratch; returns the model (eval mode) and a record of the run (seconds, final loss)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(cfg: ToyTrainConfig) -> tuple[ToyViT, dict]:
    torch.manual_seed(cfg.seed)
    model = ToyViT(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    start, losses = time.perf_counter(), []
    batches = factor_loader(cfg.train_spec(), list(cfg.model.factor_values), cfg.batch_size, cfg.num_workers)
    bar = tqdm(batches, total=cfg.steps, desc="train toy ViT", unit="step")
    for step, (pixels, targets) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = factor_loss(model(normalise(pixels, cfg.model)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    model.eval()
    return model, {"train_seconds": time.perf_counter() - start, "final_loss": float(np.mean(losses[-50:]))}


@torch.no_grad()
def factor_accuracy(model: ToyViT, spec: str, batch_size: int = 256, num_workers: int = 0) -> dict[str, float]:
    """Per-factor top-1 accuracy of the heads on a shapes source."""
    names = list(model.cfg.factor_values)
    correct, total = torch.zeros(len(names)), 0
    for pixels, targets in tqdm(factor_loader(spec, names, batch_size, num_workers), desc="held-out accuracy",
                                unit="batch"):
        logits = model(normalise(pixels, model.cfg))
        correct += torch.stack([(out.argmax(-1) == targets[:, j]).sum() for j, out in enumerate(logits.values())])
        total += len(targets)
    return {name: float(c) / total for name, c in zip(names, correct)}
