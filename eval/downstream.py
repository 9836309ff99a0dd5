"""Downstream effect of a dictionary, spliced into the real forward pass (docs/metrics.md).

The activation of a hook the dictionary reconstructs is replaced, for the tokens it was trained on only, by (a) its
reconstruction, (b) zeros, (c) the per-dimension mean over the evaluation set; the model's outputs are compared
with the clean pass: KL(clean ‖ spliced), top-1 agreement and % recovered for classifier heads, embedding cosine
for CLIP towers.

The reconstruction is computed from the hooks the dictionary reads as the clean pass captured them, and one hook
is spliced per pass. Everything upstream of the spliced hook is then the clean pass's, so this is exactly the
dictionary run inside the spliced pass: an SAE encodes the hook it replaces; a transcoder's prediction from
`mlp_in` replaces the MLP's output (`mlp_out`), as `VisionModel.splice_from` would hand it the same `mlp_in`; a
crosscoder's reconstruction of each of its hooks, in turn, is encoded from all of its hooks (its later hooks do not
exist yet in the spliced pass; the usual convention for acausal crosscoders).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from visae.eval.dictionary_hooks import DictionaryHooks

DOWNSTREAM_DEFINITION = (
    "Spliced: the hook activation of the SAE's tokens is replaced by the reconstruction (sae), zeros (zero) or the "
    "evaluation-set per-dimension mean (mean) inside the real forward pass; a transcoder's prediction replaces its "
    "output hook (the MLP's output), and a crosscoder is spliced at each of its hooks in turn (downstream_per_hook). "
    "Classifier heads: kl_* = mean KL(p_clean || p_spliced), top1_* = agreement with the clean top-1, "
    "recovered_vs_zero/mean = (KL_ablate - KL_sae) / KL_ablate. CLIP towers: cosine_* = mean cosine of clean and "
    "spliced image embeddings; zero-shot accuracy change where labels and the text tower exist (docs/metrics.md)."
)
ABLATIONS = ("sae", "zero", "mean")


def token_splice(indices: Sequence[int], transform: Callable[[torch.Tensor], torch.Tensor]):
    """A splice function replacing only the tokens at `indices` of an activation [B, n_tokens, d]."""
    index = torch.as_tensor(list(indices), dtype=torch.long)

    def fn(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[:, index] = transform(act[:, index]).to(act.dtype)
        return out

    return fn


@torch.no_grad()
def reconstructions(sae, hooks: DictionaryHooks, clean: dict[str, torch.Tensor],
                    tokens: Sequence[int]) -> dict[str, torch.Tensor]:
    """Each hook the dictionary reconstructs -> its reconstruction [B, T, d] of the dictionary's `tokens`, computed
    (in float32) from the `clean` activations [B, n_tokens, d] of the hooks it reads."""
    index = torch.as_tensor(list(tokens), dtype=torch.long)
    x = torch.cat([clean[hook][:, index] for hook in hooks.reads], dim=-1).float()
    x_hat = sae(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
    return {hook: x_hat[..., where] for hook, where in zip(hooks.writes, sae.hook_slices())}


def replacements(reconstruction: torch.Tensor, mean: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Token transforms [B, T, d] -> [B, T, d] for each ablation: the dictionary's `reconstruction` of those tokens,
    zeros, the evaluation-set `mean`."""
    return {
        "sae": lambda x: reconstruction,
        "zero": torch.zeros_like,
        "mean": lambda x: mean.to(x.dtype).expand_as(x),
    }


def as_heads(output) -> dict[str, torch.Tensor]:
    """The model output as named logit (or embedding) tensors: toy factor heads, one classifier, one embedding."""
    if isinstance(output, dict):
        return {str(k): v for k, v in output.items()}
    if isinstance(output, torch.Tensor):
        return {"output": output}
    raise ValueError(
        f"cannot compare model outputs of type {type(output).__name__}; expected a tensor or dict of tensors"
    )


class DownstreamStats:
    """Accumulates clean-vs-spliced comparisons over batches."""

    def __init__(self, kind: str):
        if kind not in ("classifier", "embedding"):
            raise ValueError(f"unknown downstream kind {kind!r}")
        self.kind = kind
        self.n = 0
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.zero_shot: dict[str, float] = defaultdict(float)

    def update(self, clean: dict[str, torch.Tensor], spliced: dict[str, dict[str, torch.Tensor]]) -> None:
        """clean: head -> [B, C]; spliced: ablation -> head -> [B, C]."""
        batch = next(iter(clean.values())).shape[0]
        self.n += batch
        for ablation, heads in spliced.items():
            for head, out in heads.items():
                ref = clean[head].double()
                out = out.double()
                acc = self.sums[head]
                if self.kind == "classifier":
                    log_p, log_q = F.log_softmax(ref, -1), F.log_softmax(out, -1)
                    acc[f"kl_{ablation}"] += float((log_p.exp() * (log_p - log_q)).sum(-1).sum())
                    acc[f"top1_{ablation}"] += float((ref.argmax(-1) == out.argmax(-1)).sum())
                else:
                    acc[f"cosine_{ablation}"] += float(F.cosine_similarity(ref, out, dim=-1).sum())

    def update_zero_shot(self, correct: dict[str, int]) -> None:
        """Correct zero-shot predictions per pass ("clean", "sae", ...) in this batch."""
        for name, count in correct.items():
            self.zero_shot[name] += count

    def result(self) -> dict:
        if self.n == 0:
            return {}
        heads = {head: {k: v / self.n for k, v in acc.items()} for head, acc in self.sums.items()}
        if self.kind == "classifier":
            for stats in heads.values():
                for ablation in ("zero", "mean"):
                    ablate = stats.get(f"kl_{ablation}", float("nan"))
                    recovered = (ablate - stats["kl_sae"]) / ablate if ablate > 0 else float("nan")
                    stats[f"recovered_vs_{ablation}"] = recovered
        out = {"kind": self.kind, "n_images": self.n, "heads": heads}
        keys = sorted({k for stats in heads.values() for k in stats})
        out["mean_over_heads"] = {k: sum(s[k] for s in heads.values()) / len(heads) for k in keys}
        if self.zero_shot:
            acc = {f"zero_shot_acc_{name}": c / self.n for name, c in self.zero_shot.items()}
            acc["zero_shot_acc_change"] = acc.get("zero_shot_acc_sae", 0.0) - acc.get("zero_shot_acc_clean", 0.0)
            out["zero_shot"] = acc
        return out
