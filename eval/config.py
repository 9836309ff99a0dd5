"""The evaluation configuration: a typed dataclass that loads from YAML with command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Optional

from omegaconf import MISSING

from visae.core.config import load_typed_config
from visae.core.fields import bounds, check_fields


@dataclass
class EvalConfig:
    """What to evaluate and how much of it. `visae eval --help` describes the fields."""

    sae_dir: str = MISSING  # SAE folder to evaluate (cfg.json + sae_weights.safetensors)
    store: Optional[str] = None  # activation store holding every hook the dictionary reads (path or s3://...)
    model: Optional[str] = None  # instead of a store: a model spec to harvest from, with --images
    images: Optional[str] = None  # instead of a store: an image source to harvest from, with --model
    weights: Optional[str] = None  # local model weights file
    hook: Optional[str] = None  # hook read (a transcoder's input, a crosscoder's first; None: metadata hook_name)
    max_images: Annotated[Optional[int], bounds(ge=1)] = None  # evaluate the first N images (None: all)
    batch_images: Annotated[int, bounds(ge=1)] = 64  # images per batch
    top_k: Annotated[int, bounds(ge=1)] = 16  # top images / patches kept per latent
    n_quantiles: Annotated[int, bounds(ge=1)] = 8  # activation-quantile samples per latent
    downstream_images: Annotated[int, bounds(ge=0)] = 256  # images for the spliced forward passes
    model_passes: bool = True  # run the model: spliced downstream effect, monosemanticity, text labels
    neuron_images: Annotated[int, bounds(ge=0)] = 128  # images for neurons vs features (mlp_hidden, MLP transcoders)
    probe_rows: Annotated[int, bounds(ge=0)] = 131072  # activation rows (patches) for the probe ceiling (0: none)
    effect_latents: Annotated[int, bounds(ge=0)] = 64  # top-ranked latents ablated on their top images (SAEs; 0: none)
    vocabulary: Optional[str] = None  # text file of concepts (one per line) for CLIP text labels
    compare_to: list[str] = field(default_factory=list)  # other evaluated dictionaries to place on the L0/FVU plot
    report_features: Annotated[int, bounds(ge=0)] = 24  # top-ranked features shown in report.html
    allow_mismatch: bool = False  # run on a store of another model/weights/hook/tokens (noted in summary.json)
    device: str = "auto"  # torch device: auto (this rank's GPU if one is visible, else cpu), cpu, cuda, cuda:N
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        check_fields(self)
        if self.store is None and (self.model is None or self.images is None):
            raise ValueError("say what to evaluate on: --store STORE, or --model SPEC with --images SOURCE")
        if self.store is not None and (self.model is not None or self.images is not None):
            raise ValueError("give either --store or --model/--images, not both")


def load_eval_config(yaml_path: str | None = None, overrides: dict | None = None,
                     dotlist: list[str] | None = None) -> EvalConfig:
    """Defaults <- YAML file <- `overrides` (command-line flags) <- `dotlist` ("key=value" strings)."""
    return load_typed_config(EvalConfig, yaml_path, overrides or {}, dotlist or [])
