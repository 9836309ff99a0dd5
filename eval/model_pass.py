"""Forward passes of the real model over the evaluated images: the spliced downstream comparison and the
reference embeddings for the monosemanticity score (the model's own final CLS embedding)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from visae.eval.downstream import ABLATIONS, DownstreamStats, as_heads, reconstructions, replacements, token_splice
from visae.eval.text_labels import zero_shot_correct

if TYPE_CHECKING:
    from visae.eval.dictionary_hooks import DictionaryHooks


@dataclass
class ModelPassResult:
    downstream: dict[str, dict]  # by hook the dictionary reconstructs (DownstreamStats.result())
    embeddings: np.ndarray  # [n_images, d_model] final-block CLS (mean token where there is no CLS)
    images_per_s: dict  # forward passes per second: "clean" and "spliced"
    outputs: np.ndarray | None  # clean image embeddings [n_images, D] of embedding models (CLIP), else None


def downstream_kind(model) -> str:
    """'embedding' for CLIP towers and headless backbones, else 'classifier' (timm heads, toy factor heads)."""
    if model.spec.startswith("open_clip:") or getattr(model.module, "num_classes", None) == 0:
        return "embedding"
    return "classifier"


def final_embedding_hook(model) -> str:
    return f"blocks.{model.n_blocks - 1}.resid_post"


@contextlib.contextmanager
def _capture(model, hooks: Iterable[str], into: dict[str, torch.Tensor]):
    """Record the activation at each of `hooks` in `into` during the forward passes inside this context."""

    def keeper(hook: str):
        def keep(act: torch.Tensor) -> torch.Tensor:
            into[hook] = act
            return act

        return keep

    with contextlib.ExitStack() as stack:
        for hook in dict.fromkeys(hooks):
            stack.enter_context(model.splice(hook, keeper(hook)))
        yield


def run_model_pass(model, sae, hooks: DictionaryHooks, token_kind: str, mean: torch.Tensor, images,
                   n_downstream: int, batch_size: int, progress: bool = True, labels: np.ndarray | None = None,
                   class_text_emb: torch.Tensor | None = None) -> ModelPassResult:
    """`images(start, stop)` returns preprocessed pixels [b, 3, H, W] of evaluated images start..stop-1; `mean` is
    the evaluation-set mean of the hooks the dictionary reconstructs, side by side. Each of those hooks gets its own
    downstream comparison (`ModelPassResult.downstream`, by hook).

    With `class_text_emb` (unit text embeddings of the class prompts) and image `labels`, CLIP towers also
    get the zero-shot accuracy of the clean and each spliced pass."""
    n_images = images.n
    kind = downstream_kind(model)
    stats = {hook: DownstreamStats(kind) for hook in hooks.writes}
    means = {hook: mean[where] for hook, where in zip(hooks.writes, sae.hook_slices())}
    token_index = model.layout.indices(token_kind)
    cls_index = model.layout.cls_index
    final_hook = final_embedding_hook(model)
    embeddings, outputs = [], []
    seconds, counted = {"clean": 0.0, "spliced": 0.0}, {"clean": 0, "spliced": 0}
    for start in tqdm(range(0, n_images, batch_size), desc="model passes", unit="batch", disable=not progress):
        stop = min(start + batch_size, n_images)
        pixels = images(start, stop).to(model.device)
        captured: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        with torch.no_grad(), _capture(model, [final_hook, *hooks.reads], captured):
            clean = as_heads(model.forward(pixels))
        seconds["clean"] += time.perf_counter() - t0
        counted["clean"] += stop - start
        final = captured[final_hook]
        embeddings.append((final[:, cls_index] if cls_index is not None else final.mean(1)).float().cpu().numpy())
        if kind == "embedding":
            outputs.append(next(iter(clean.values())).float().cpu().numpy())
        if start >= n_downstream:
            continue
        keep = min(stop, n_downstream) - start
        clean_kept = {h: v[:keep] for h, v in clean.items()}
        t0 = time.perf_counter()
        recon = reconstructions(sae, hooks, {hook: captured[hook][:keep] for hook in hooks.reads}, token_index)
        for hook, hook_stats in stats.items():
            spliced = {}
            for name, fn in replacements(recon[hook], means[hook]).items():
                with torch.no_grad(), model.splice(hook, token_splice(token_index, fn)):
                    spliced[name] = {h: v[:keep] for h, v in as_heads(model.forward(pixels[:keep])).items()}
            hook_stats.update(clean_kept, spliced)
            if class_text_emb is not None and labels is not None:
                truth = torch.as_tensor(labels[start : start + keep]).to(model.device)
                text_emb = class_text_emb.to(model.device)
                hook_stats.update_zero_shot({name: zero_shot_correct(heads["output"], text_emb, truth)
                                             for name, heads in {"clean": clean_kept, **spliced}.items()})
        seconds["spliced"] += (time.perf_counter() - t0) / (len(stats) * len(ABLATIONS))
        counted["spliced"] += keep
    rates = {k: counted[k] / seconds[k] if seconds[k] > 0 else None for k in seconds}
    return ModelPassResult(downstream={hook: s.result() for hook, s in stats.items()},
                           embeddings=np.concatenate(embeddings), images_per_s=rates,
                           outputs=np.concatenate(outputs) if outputs else None)
