"""What each feature does: the model output that ablating it on its own top images changes most (docs/metrics.md).

Rows of (latent, one of its top images) are batched, so one forward pass ablates many latents, each on its own
images; every row is compared with the clean pass of the same image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from visae.eval.interventions import code_edit_splice
from visae.eval.output_reader import EMBEDDING_HEAD, OutputReader

EFFECT_DEFINITION = (
    "Each of the --effect-latents top-ranked latents is ablated (its code set to 0 on every token; x -> x - "
    "decode(z) + decode(z'), the reconstruction error kept) on each of its top images inside the real forward "
    "pass. effect_output is the output whose probability changes most on average (classifier: head=class; CLIP: "
    "zero-shot concept over the vocabulary), effect_size that mean change of probability (negative: the feature "
    "supports it). Headless backbones: effect_output 'embedding', effect_size = mean 1 - cosine(clean, ablated)."
)


def _row_ablation(latents: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Zero, in row b of codes [B, T, d_sae], the latent `latents[b]` on every token."""

    def edit(z: torch.Tensor) -> torch.Tensor:
        mask = F.one_hot(latents.to(z.device), z.shape[-1]).bool()[:, None, :]
        return z.masked_fill(mask, 0)

    return edit


@torch.no_grad()
def feature_effects(model, sae, hook: str, tokens: Sequence[int], latents: Sequence[int], top_images: np.ndarray,
                    pixels_of: Callable[[list[int]], torch.Tensor], reader: OutputReader, batch_rows: int,
                    progress: bool = False) -> dict[str, list | np.ndarray]:
    """Columns `effect_output` and `effect_size` over all d_sae latents (None / NaN where not measured)."""
    d_sae = top_images.shape[0]
    rows = [(int(j), int(i)) for j in latents for i in top_images[j] if i >= 0]
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(d_sae)
    for start in tqdm(range(0, len(rows), batch_rows), desc="feature effects", disable=not progress):
        chunk = rows[start : start + batch_rows]
        which = torch.as_tensor([j for j, _ in chunk])
        pixels = pixels_of([i for _, i in chunk]).to(model.device)
        clean = reader.heads(model.forward(pixels))
        with model.splice(hook, code_edit_splice(sae, tokens, _row_ablation(which))):
            ablated = reader.heads(model.forward(pixels))
        for head, change in _changes(reader, clean, ablated).items():
            sums.setdefault(head, torch.zeros(d_sae, change.shape[-1])).index_add_(0, which, change.cpu())
        counts.index_add_(0, which, torch.ones(len(chunk)))
    return _columns(reader, sums, counts)


def _changes(reader: OutputReader, clean: dict, ablated: dict) -> dict[str, torch.Tensor]:
    """Per row, the change of each scored output's probability ([B, C] per head), or 1 - cosine of embeddings."""
    before, after = reader.log_probs(clean), reader.log_probs(ablated)
    if not before:
        cos = F.cosine_similarity(clean[EMBEDDING_HEAD], ablated[EMBEDDING_HEAD], dim=-1)
        return {EMBEDDING_HEAD: (1 - cos)[:, None]}
    return {head: after[head].exp() - p.exp() for head, p in before.items()}


def _columns(reader: OutputReader, sums: dict[str, torch.Tensor], counts: torch.Tensor) -> dict[str, list | np.ndarray]:
    d_sae = len(counts)
    outputs: list[str | None] = [None] * d_sae
    sizes = np.full(d_sae, np.nan)
    if not sums:
        return {"effect_output": outputs, "effect_size": sizes}
    heads = list(sums)
    means = [sums[h] / counts.clamp_min(1)[:, None] for h in heads]
    best = torch.stack([m.abs().max(-1).values for m in means], 1)  # [d_sae, heads]
    for j in torch.nonzero(counts).ravel().tolist():
        h = int(best[j].argmax())
        c = int(means[h][j].abs().argmax())
        outputs[j] = _output_name(reader, heads[h], c, means[h].shape[-1])
        sizes[j] = float(means[h][j, c])
    return {"effect_output": outputs, "effect_size": sizes}


def _output_name(reader: OutputReader, head: str, index: int, n: int) -> str:
    """"head=class" for named classifier heads, the class or concept alone for a single head."""
    if head == EMBEDDING_HEAD:
        return EMBEDDING_HEAD
    name = reader.names(head, n)[index]
    return name if head in ("output", "zero_shot") else f"{head}={name}"
