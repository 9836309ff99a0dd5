"""What a served transcoder or crosscoder adds to an SAE's pages (docs/dictionary-formats.md).

A transcoder reads one hook and writes another, so its feature page has two sides: the input side (the hook it
reads, its top images: where the latent's activation, computed from that hook, is high, and the latents that read
most alike by encoder cosine) and the output side (the hook it writes, how strongly its decoder row writes there,
the latents that write most alike by decoder cosine, the neurons it writes for an `mlp_hidden` output). A
crosscoder reads and reconstructs several hooks through shared latents: its feature page shows the latent's
decoder norm at each hook (`hook_profile.safetensors`), which says in which hooks it lives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from visae.sae.crosscoder import EXCLUSIVE_SHARE, CrossCoder
from visae.sae.hub import hooks_read

if TYPE_CHECKING:
    from visae.sae import SAE

PROFILE_UNITS = ("decoder norm at each hook in the training units (every hook scaled to E‖x‖ = √d), where a latent's "
                 "decoder rows over all hooks together have unit norm")
OUTPUT_SIDE = ("what the decoder row writes at the output hook: its norm (raw output units per unit of activation), "
               "the vector it writes at the latent's mean activation against the output's mean norm, and the latents "
               "whose decoder rows point the same way")
INPUT_SIDE = ("what the latent reads: its activation is computed from the input hook alone; the top images show the "
              "tokens where it is high, and the latents listed read the most similar encoder directions")


@dataclass(frozen=True)
class Hooks:
    """The hooks a dictionary reads and writes: an SAE reads and reconstructs one, a transcoder reads `read[0]` and
    writes `out_hook`, a crosscoder reads and reconstructs every hook of `read`."""

    kind: str  # "sae", "transcoder" or "crosscoder"
    read: list[str]
    dims: list[int]  # the width of each hook read
    out_hook: str | None = None
    d_out: int | None = None

    @classmethod
    def of(cls, cfg: dict[str, Any], sae: SAE, hook: str | None) -> Hooks:
        """`hook`: the one hook an SAE or transcoder reads (from its eval summary or metadata), if known."""
        kind = type(sae).traits.kind
        dims = [int(d) for d in cfg.get("hook_dims") or [cfg["d_in"]]]
        if kind == "crosscoder":
            names = hooks_read(cfg)
            return cls(kind, names if len(names) == len(dims) else [f"hook {i}" for i in range(len(dims))], dims)
        read = [hook] if hook else []
        if kind == "transcoder":
            return cls(kind, read, dims, (cfg.get("metadata") or {}).get("hook_name_out"), int(cfg["d_out"]))
        return cls(kind, read, dims)

    def refused(self, models: list[str]) -> dict[str, str]:
        """The service's operations that do not apply to this dictionary, each with why (`models`: the model of
        each hook read)."""
        refused = {}
        if self.kind != "sae":
            refused["intervene"] = (f"interventions edit a dictionary's code where it reconstructs the hook it reads; "
                                    f"a {self.kind}'s decoder writes {', '.join(self.written)}, so its edits are not "
                                    "served")
        if len(set(models)) > 1:
            refused["encode"] = (f"this crosscoder reads hooks of several models ({', '.join(sorted(set(models)))}); "
                                 "the service encodes images with one model")
        return refused

    @property
    def written(self) -> list[str]:
        """The hooks the decoder writes."""
        return [self.out_hook] if self.out_hook else self.read

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "hooks": self.read, "hook_dims": self.dims, "out_hook": self.out_hook,
                "d_out": self.d_out}


def decoder_norms_by_hook(profile_file: Path | None, sae: SAE) -> np.ndarray:
    """A crosscoder's `decoder_norms` [d_sae, n_hooks]: its hook_profile.safetensors (`profile_file`: the file's real
    path inside the dictionary folder, None when it has none), else the same figures from the loaded weights."""
    assert isinstance(sae, CrossCoder)  # called for crosscoders only
    if profile_file is not None:
        try:
            norms = load_file(str(profile_file))["decoder_norms"]
        except (SafetensorError, OSError, KeyError):
            norms = None
        if norms is not None and norms.shape == (sae.cfg.d_sae, len(sae.cfg.hook_dims)):
            return norms.astype(np.float64)
    with torch.no_grad():
        return sae.decoder_norms().double().numpy()


def hook_profile(hooks: list[str], norms: np.ndarray) -> dict[str, Any]:
    """One latent's decoder norm at each hook with its share of their sum, and the hook it is exclusive to (share ≥
    `EXCLUSIVE_SHARE`, as `sae.crosscoder.hook_profile` counts), if any."""
    total = max(float(norms.sum()), 1e-12)
    bars = [{"hook": hook, "norm": round(float(norm), 5), "share": round(float(norm) / total, 5)}
            for hook, norm in zip(hooks, norms)]
    exclusive = next((bar["hook"] for bar in bars if bar["share"] >= EXCLUSIVE_SHARE), None)
    return {"hooks": bars, "exclusive_to": exclusive, "exclusive_share_threshold": EXCLUSIVE_SHARE,
            "units": PROFILE_UNITS}


def transcoder_sides(hooks: Hooks, cfg: dict[str, Any], norms: np.ndarray, feature: int,
                     mean_act: float | None) -> dict[str, Any]:
    """The input and output sides of one transcoder latent (`norms`: every latent's decoder norm, `mean_act`: this
    latent's mean activation when firing, if evaluated); the dictionary adds each side's neighbours."""
    norm, out_scale = float(norms[feature]), (cfg.get("metadata") or {}).get("output_scale_folded")
    output_mean_norm = math.sqrt(hooks.d_out or 0) / out_scale if out_scale else None  # training set E||x|| = sqrt(d)
    written = norm * mean_act if mean_act is not None and math.isfinite(mean_act) else None
    return {
        "input": {"hook": hooks.read[0] if hooks.read else None, "width": hooks.dims[0], "shows": INPUT_SIDE},
        "output": {"hook": hooks.out_hook, "width": hooks.d_out, "shows": OUTPUT_SIDE,
                   "decoder_norm": round(norm, 6),
                   "decoder_norm_percentile": round(float((norms < norm).mean()), 4),
                   "write_at_mean_act": None if written is None else round(written, 6),
                   "output_mean_norm": None if output_mean_norm is None else round(output_mean_norm, 6)},
    }
