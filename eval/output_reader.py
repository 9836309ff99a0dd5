"""How a model family's outputs are read as scores over named outputs, and how two passes' outputs are compared.

Three readings (docs/metrics.md, "Causal effects"):
- classifier heads (the toy's factor heads, timm classifiers): log-softmax of each head's logits, over its classes
  (the toy's factor values; ImageNet names where timm knows the label set; else "class i");
- CLIP towers: zero-shot log-probabilities over a vocabulary, softmax(100 · cos(image, "a photo of {concept}."));
- headless backbones: the embedding itself, compared by cosine only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data.imagenet_info import ImageNetInfo, infer_imagenet_subset

from visae.eval.downstream import as_heads
from visae.eval.model_pass import downstream_kind
from visae.eval.text_labels import load_vocabulary, text_embeddings

CLIP_LOGIT_SCALE = 100.0
ZERO_SHOT_HEAD = "zero_shot"
EMBEDDING_HEAD = "embedding"


class OutputReader:
    """Reads one model's outputs: `kind` is "classifier", "zero_shot" (CLIP) or "embedding" (headless)."""

    def __init__(self, model, vocabulary: list[str] | None = None):
        self.model = model
        self.kind = downstream_kind(model)
        self._names: dict[str, list[str]] = {}
        self._text: torch.Tensor | None = None
        if self.kind == "embedding" and callable(getattr(model, "encode_text", None)):
            self.kind = "zero_shot"
            concepts = list(vocabulary) if vocabulary else load_vocabulary(None, None)
            self._names[ZERO_SHOT_HEAD] = concepts
            self._text = torch.from_numpy(text_embeddings(model, concepts))

    def heads(self, output) -> dict[str, torch.Tensor]:
        """The raw output as named tensors: logits per classifier head, or the image embedding."""
        heads = {h: v.float() for h, v in as_heads(output).items()}
        if self.kind == "classifier":
            return heads
        return {EMBEDDING_HEAD: next(iter(heads.values()))}

    def log_probs(self, heads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per scored head, log-probabilities [B, C] over its named outputs ({} for a headless backbone)."""
        if self.kind == "classifier":
            return {h: F.log_softmax(v, -1) for h, v in heads.items()}
        if self.kind == "zero_shot" and self._text is not None:
            image = F.normalize(heads[EMBEDDING_HEAD], dim=-1)
            return {ZERO_SHOT_HEAD: F.log_softmax(CLIP_LOGIT_SCALE * image @ self._text.to(image.device).T, -1)}
        return {}

    def names(self, head: str, n: int) -> list[str]:
        """Names of the n outputs of a scored head."""
        if head not in self._names:
            self._names[head] = _class_names(self.model, head, n)
        return self._names[head]

    def compare(self, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], top: int = 5) -> dict:
        """What changed from `before` to `after` (raw heads of the same images): per scored head the share of images
        whose top prediction flipped, mean KL(before ‖ after), and the outputs most promoted and suppressed (mean
        change of probability and of logit); for embeddings the mean cosine of before and after."""
        out: dict = {"kind": self.kind, "n_images": int(next(iter(before.values())).shape[0]), "heads": {}}
        if self.kind != "classifier":
            cos = F.cosine_similarity(before[EMBEDDING_HEAD], after[EMBEDDING_HEAD], dim=-1)
            out["embedding_cosine"] = float(cos.mean())
        lp_before, lp_after = self.log_probs(before), self.log_probs(after)
        for head, p in lp_before.items():
            q = lp_after[head]
            names = self.names(head, p.shape[-1])
            d_prob = (q.exp() - p.exp()).mean(0)
            d_logit = ((after[head] - before[head]).mean(0) if self.kind == "classifier" else (q - p).mean(0))
            order = d_prob.argsort(descending=True).tolist()

            def item(c: int) -> dict:
                return {"output": names[c], "index": c, "d_prob": float(d_prob[c]), "d_logit": float(d_logit[c])}

            out["heads"][head] = {
                "flips": float((p.argmax(-1) != q.argmax(-1)).float().mean()),
                "kl": float((p.exp() * (p - q)).sum(-1).mean()),
                "promoted": [item(c) for c in order[:top] if d_prob[c] > 0],
                "suppressed": [item(c) for c in reversed(order[-top:]) if d_prob[c] < 0],
            }
        return out

    def predictions(self, heads: dict[str, torch.Tensor], image: int, n: int = 3) -> dict[str, list[dict]]:
        """The n most probable outputs of each scored head for one image, with their probabilities."""
        out = {}
        for head, lp in self.log_probs(heads).items():
            names = self.names(head, lp.shape[-1])
            probs, idx = lp[image].exp().topk(min(n, lp.shape[-1]))
            out[head] = [{"output": names[int(i)], "prob": float(p)} for p, i in zip(probs, idx)]
        return out


def _class_names(model, head: str, n: int) -> list[str]:
    """The toy's factor values for its heads, ImageNet names for a timm head over a label set timm knows."""
    factor_values = getattr(getattr(model.module, "cfg", None), "factor_values", None)
    if isinstance(factor_values, dict) and len(factor_values.get(head, ())) == n:
        return list(factor_values[head])
    subset = infer_imagenet_subset(model.module)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == n:
            return [info.index_to_description(i).split(",")[0] for i in range(n)]
    return [f"class {i}" for i in range(n)]
