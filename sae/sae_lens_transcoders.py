"""TopK transcoders for SAELens: `register()` teaches `sae_lens.SAE.load_from_disk` (and `from_pretrained`) the
`topk_transcoder` and `topk_skip_transcoder` folders visae writes.

SAELens (6.x) has ReLU and JumpReLU transcoders only, so a TopK transcoder cannot be saved under one of its names
without changing its outputs (BatchTopK transcoders are: as `jumprelu_transcoder` with their threshold, which
SAELens loads as it is). These two classes are SAELens's own `Transcoder` and `SkipTranscoder` with SAELens's own
TopK activation and a `k` in their config; nothing else differs. Imported by users of SAELens, never by visae.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMES = ("topk_transcoder", "topk_skip_transcoder")


def register() -> None:
    """Register both classes with SAELens (once; later calls do nothing)."""
    from sae_lens import register_sae_class
    from sae_lens.registry import SAE_CLASS_REGISTRY
    from sae_lens.saes.topk_sae import TopK
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig, Transcoder, TranscoderConfig

    if all(name in SAE_CLASS_REGISTRY for name in NAMES):
        return

    @dataclass
    class TopKTranscoderConfig(TranscoderConfig):
        k: int = 32

        @classmethod
        def architecture(cls) -> str:
            return "topk_transcoder"

    @dataclass
    class TopKSkipTranscoderConfig(SkipTranscoderConfig):
        k: int = 32

        @classmethod
        def architecture(cls) -> str:
            return "topk_skip_transcoder"

    class TopKTranscoder(Transcoder):
        cfg: Any

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    class TopKSkipTranscoder(SkipTranscoder):
        cfg: Any

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    register_sae_class("topk_transcoder", TopKTranscoder, TopKTranscoderConfig)
    register_sae_class("topk_skip_transcoder", TopKSkipTranscoder, TopKSkipTranscoderConfig)
