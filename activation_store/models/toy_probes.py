"""What the toy model's token kinds carry: linear probes per factor, and the effect of ablating the registers.

Probes are closed-form ridge classifiers (one-hot targets, standardised features), fitted on one part of a held-out
shapes sample and scored on the rest, so the comparison between token kinds needs no optimiser and is exact.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from visae.activation_store.models.base import VisionModel
from visae.activation_store.sources.shapes import ShapesSource

RIDGE = 10.0


def token_features(model: VisionModel, source: ShapesSource, hook: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per image, at `hook`: the CLS token, the register tokens (concatenated and each alone), the patch mean."""
    layout, chunks = model.layout, []
    for start in tqdm(range(0, len(source), batch_size), desc=f"features at {hook}", unit="batch"):
        images = [source.render(i)[0] for i in range(start, min(start + batch_size, len(source)))]
        acts = model.run_with_cache(model.preprocess.batch(images), [hook])[model.canonical(hook)].float()
        regs = acts[:, list(layout.register_indices)]
        feats = {"cls": acts[:, layout.cls_index], "registers": regs.flatten(1),
                 "patch_mean": acts[:, list(layout.patch_indices)].mean(1)}
        feats.update({f"register_{j}": regs[:, j] for j in range(regs.shape[1])})
        chunks.append(feats)
    return {k: torch.cat([c[k] for c in chunks]).numpy().astype(np.float64) for k in chunks[0]}


def ridge_probe_accuracy(x: np.ndarray, y: np.ndarray, n_classes: int, n_train: int) -> float:
    """Held-out accuracy of a ridge classifier fitted on the first n_train rows."""
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    target = np.eye(n_classes)[y[:n_train]]
    a, b = z[:n_train], target
    w = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ b)
    return float((np.argmax(z[n_train:] @ w, axis=1) == y[n_train:]).mean())


def probe_table(model: VisionModel, source: ShapesSource, hook: str, train_fraction: float = 2 / 3) -> dict:
    """{token kind: {factor: held-out probe accuracy}} for every factor of the source."""
    feats = token_features(model, source, hook)
    factors = [source.factors(i) for i in range(len(source))]
    n_train = int(len(source) * train_fraction)
    if n_train < 10 or len(source) - n_train < 10:
        raise ValueError(f"probing needs at least 30 images, got {len(source)}")
    return {
        kind: {
            name: ridge_probe_accuracy(x, np.array([f[name] for f in factors]), len(values), n_train)
            for name, values in source.factor_values.items()
        }
        for kind, x in feats.items()
    }


@torch.no_grad()
def register_ablation(model: VisionModel, source: ShapesSource, hook: str, batch_size: int = 256) -> dict:
    """Mean-ablate the register tokens at `hook` (replace each by its mean over the sample) and compare predictions.

    Returns per factor the fraction of images whose predicted class changes and the mean KL(clean || ablated).
    """
    regs = list(model.layout.register_indices)
    batches = [model.preprocess.batch([source.render(i)[0] for i in range(s, min(s + batch_size, len(source)))])
               for s in range(0, len(source), batch_size)]
    name = model.canonical(hook)
    mean = torch.cat([model.run_with_cache(b, [name])[name][:, regs] for b in batches]).mean(0)

    def ablate(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[:, regs] = mean
        return act

    changed, kl, total = {}, {}, 0
    for pixels in batches:
        clean = model(pixels)
        with model.splice(name, ablate):
            ablated = model(pixels)
        for factor in clean:
            p, q = clean[factor].log_softmax(-1), ablated[factor].log_softmax(-1)
            changed[factor] = changed.get(factor, 0) + int((p.argmax(-1) != q.argmax(-1)).sum())
            kl[factor] = kl.get(factor, 0.0) + float((p.exp() * (p - q)).sum(-1).sum())
        total += len(pixels)
    return {"changed": {f: c / total for f, c in changed.items()}, "kl": {f: v / total for f, v in kl.items()}}
