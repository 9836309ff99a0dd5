"""Train the toy ViT on the `shapes` source, deterministically on CPU from one seed.

Training images are drawn fresh for every step from `shapes:n=steps*batch_size,seed=seed` (so there is no
overfitting to a fixed set), in index order, by a DataLoader. Held-out images come from a different seed.
The loss is the sum of the CLS heads' cross-entropies plus, with patch heads, the sum of the patch heads'
cross-entropies averaged over the patches each one is asked about (see PATCH_HEADS and `patch_loss`).
"""

from __future__ import annotations

import functools
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from visae.activation_store.models.toy_vit import PATCH_HEADS, ToyViT, ToyViTConfig
from visae.activation_store.sources.shapes import SHAPES, ShapesSource
from visae.core.fields import bounds, check_fields

HELD_OUT_SEED_OFFSET = 1_000
IGNORE = -100  # cross_entropy's ignore_index: a patch a head is not asked about


@dataclass
class ToyTrainConfig:
    seed: Annotated[int, bounds(ge=0)] = 0  # seed of the initialisation and of the training images
    steps: Annotated[int, bounds(ge=1)] = 4500  # training steps
    batch_size: Annotated[int, bounds(ge=1)] = 64  # images per step
    # 2e-3 left position and shape near chance for the first ~1000 steps
    lr: Annotated[float, bounds(gt=0)] = 5e-4  # peak learning rate (AdamW, linear warm-up then cosine decay)
    weight_decay: Annotated[float, bounds(ge=0)] = 0.05  # AdamW weight decay
    warmup_steps: Annotated[int, bounds(ge=0)] = 50  # steps of linear LR warm-up
    grad_clip: Annotated[float, bounds(ge=0)] = 1.0  # max global grad norm
    image_size: Annotated[int, bounds(ge=8)] = 64  # side of the generated images, in pixels
    eval_images: Annotated[int, bounds(ge=1)] = 2000  # held-out images for the accuracies in the model card
    num_workers: Annotated[int, bounds(ge=0)] = 1  # DataLoader workers rendering the training images
    # fixed, so results do not depend on the core count; 2 train the defaults in about 35 min on 2 idle cores
    threads: Annotated[int, bounds(ge=1)] = 2  # torch threads
    model: ToyViTConfig = field(default_factory=ToyViTConfig)  # the model's architecture

    def __post_init__(self) -> None:
        check_fields(self)

    def train_spec(self) -> str:
        return f"shapes:n={self.steps * self.batch_size},seed={self.seed},size={self.image_size}"

    def held_out_spec(self) -> str:
        return f"shapes:n={self.eval_images},seed={self.seed + HELD_OUT_SEED_OFFSET},size={self.image_size}"


class FactorImages(Dataset):
    """(uint8 pixels [3,H,W], factor targets [n_factors], patch targets [len(PATCH_HEADS), grid*grid]) for each
    image of a shapes source."""

    def __init__(self, source: ShapesSource, factor_names: list[str], grid: int):
        self.source, self.factor_names, self.grid = source, factor_names, grid

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(np.asarray(self.source[i].image).copy()).permute(2, 0, 1)
        factors = self.source.factors(i)
        patches = patch_targets(self.source.patch_labels(i, (self.grid, self.grid)), factors["background"])
        return pixels, torch.tensor([factors[name] for name in self.factor_names]), patches


def patch_targets(labels: dict[str, np.ndarray], background: int) -> torch.Tensor:
    """Per patch head, its target at every patch (row-major): the covering object's value on covered patches; on the
    others the class after the shapes ("background") for the segmentation head `shape`, the background type for
    `background`, and IGNORE for the object factors. `background` is IGNORE on covered patches."""
    covered = labels["object"].reshape(-1) >= 0
    uncovered = {"shape": len(SHAPES), "background": background}
    rows = [np.where(covered, IGNORE if name == "background" else labels[name].reshape(-1), uncovered.get(name, IGNORE))
            for name in PATCH_HEADS]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def normalise(pixels: torch.Tensor, cfg: ToyViTConfig) -> torch.Tensor:
    """uint8 [B,3,H,W] -> the model's float input (the same mapping as the toy model's Preprocess)."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def factor_loader(spec: str, model: ToyViTConfig, batch_size: int, num_workers: int) -> DataLoader:
    """Batches of a shapes source in index order (a DataLoader worker renders them while the model trains)."""
    images = FactorImages(ShapesSource.from_spec(spec), list(model.factor_values), model.img_size // model.patch_size)
    return DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def lr_at(step: int, cfg: ToyTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def factor_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    losses = (nn.functional.cross_entropy(out, targets[:, j]) for j, out in enumerate(logits.values()))
    return functools.reduce(operator.add, losses)


def patch_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Sum over patch heads of the mean cross-entropy over the patches each is asked about (0 for none). The
    segmentation head `shape` counts as two heads, one on the patches an object covers and one on background
    patches: averaged over all patches, the background (about three patches in four) diluted the objects' shape."""
    total = torch.zeros(())
    for j, out in enumerate(logits.values()):
        target = targets[:, j].reshape(-1)
        asked = [target == len(SHAPES), (target != len(SHAPES)) & (target != IGNORE)] if j == 0 else [target != IGNORE]
        for where in asked:
            if where.any():
                total = total + nn.functional.cross_entropy(out.flatten(0, 1)[where], target[where])
    return total


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
    batches = factor_loader(cfg.train_spec(), cfg.model, cfg.batch_size, cfg.num_workers)
    bar = tqdm(batches, total=cfg.steps, desc="train toy ViT", unit="step")
    for step, (pixels, targets, patch_target) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        cls_logits, patch_logits = model.forward_all(normalise(pixels, cfg.model))
        loss = factor_loss(cls_logits, targets) + patch_loss(patch_logits, patch_target)
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
def factor_accuracy(model: ToyViT, spec: str, batch_size: int = 256, num_workers: int = 0) -> dict[str, dict]:
    """Held-out top-1 accuracy: `image` per CLS head; `patch` per patch head on the patches it is asked about
    (`shape` and the object factors on covered patches, `background` on uncovered ones), plus `segmentation`, the
    `shape` head over all patches with background as a class. `patch` is empty for a model without patch heads."""
    names, patch_names = list(model.cfg.factor_values), list(model.patch_heads)
    correct, total = torch.zeros(len(names)), 0
    patch_correct, patch_total = torch.zeros(len(patch_names) + 1), torch.zeros(len(patch_names) + 1)
    for pixels, targets, patch_target in tqdm(factor_loader(spec, model.cfg, batch_size, num_workers),
                                              desc="held-out accuracy", unit="batch"):
        logits, patch_logits = model.forward_all(normalise(pixels, model.cfg))
        correct += torch.stack([(out.argmax(-1) == targets[:, j]).sum() for j, out in enumerate(logits.values())])
        total += len(targets)
        for j, out in enumerate(patch_logits.values()):
            asked = patch_target[:, j] != IGNORE
            if j == 0:  # the segmentation head: score it on every patch, and separately on covered patches
                patch_correct[-1] += (out.argmax(-1) == patch_target[:, j]).sum()
                patch_total[-1] += asked.numel()
                asked = patch_target[:, j] != len(SHAPES)
            patch_correct[j] += ((out.argmax(-1) == patch_target[:, j]) & asked).sum()
            patch_total[j] += asked.sum()
    patch = {name: float(c / max(t, 1)) for name, c, t in zip(patch_names + ["segmentation"], patch_correct,
                                                              patch_total)} if patch_names else {}
    return {"image": {name: float(c) / total for name, c in zip(names, correct)}, "patch": patch}
