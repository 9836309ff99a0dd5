"""ViT-Prisma (Prisma-Multimodal) SAEs: a state-dict `.pt` (W_enc [d, n], b_enc, W_dec [n, d], b_dec,
possibly nested under 'state_dict') plus `config.json` (d_in, d_sae or expansion_factor,
hook_point, activation_fn_str, activation_fn_kwargs, normalize_activations, model_name, cls_token_only).

Prisma encodes (x - b_dec) @ W_enc + b_enc; its TopK applies a ReLU to the kept values, as visae does.
Checkpoints that pickle a config object need full unpickling and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visae.core.file_hash import file_sha256
from visae.sae.config import SAEConfig
from visae.sae.converters.hooks import prisma_hook
from visae.sae.converters.safe_load import load_weights_only, require_keys, tensor_dict
from visae.sae.registry import architecture_class

if TYPE_CHECKING:  # for the annotations only: sae.base imports the Hub client, which imports us
    from visae.sae.base import SAE

BASE_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")


def read_prisma_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"ViT-Prisma SAEs come with a config.json next to the weights; {path} is missing")
    return json.loads(path.read_text())


def prisma_architecture(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    activation = config.get("activation_fn_str", "relu")
    if activation == "relu":
        return "standard", {}
    if activation == "topk":
        k = (config.get("activation_fn_kwargs") or {}).get("k")
        if k is None:
            raise ValueError("ViT-Prisma config says activation_fn_str='topk' but gives no activation_fn_kwargs.k")
        return "topk", {"k": int(k)}
    raise ValueError(f"ViT-Prisma activation {activation!r} has no visae equivalent (known: relu, topk)")


def convert_prisma(
    weights: str | Path, config: str | Path | None = None, hook_name: str | None = None,
    model_name: str | None = None, source: str | None = None,
) -> SAE:
    """A visae SAE with the same encode/decode as a ViT-Prisma checkpoint, recording the conversion."""
    weights = Path(weights)
    config_path = Path(config) if config is not None else weights.with_name("config.json")
    prisma_cfg = read_prisma_config(config_path)
    norm = prisma_cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise ValueError(
            f"{config_path}: normalize_activations={norm!r} rescales each input at run time, which a "
            "fixed-weight SAE cannot reproduce; only 'none' converts exactly"
        )
    tensors = tensor_dict(load_weights_only(weights, str(weights)), str(weights))
    require_keys(tensors, BASE_KEYS, str(weights))
    architecture, params = prisma_architecture(prisma_cfg)
    d_in, d_sae = tensors["W_enc"].shape
    if int(prisma_cfg.get("d_in", d_in)) != d_in:
        raise ValueError(
            f"{config_path} says d_in={prisma_cfg['d_in']} but W_enc has shape {list(tensors['W_enc'].shape)}"
        )
    source_hook = prisma_cfg.get("hook_point")
    metadata = {
        "model_name": model_name or prisma_cfg.get("model_name"),
        "hook_name": hook_name or (prisma_hook(source_hook) if source_hook else None),
        "token_kind": "cls" if prisma_cfg.get("cls_token_only") else "all",
        "conversion": {
            "from": "vit_prisma",
            "source": source or str(weights),
            "source_sha256": file_sha256(weights),
            "source_hook": source_hook,
            "notes": ["ViT-Prisma subtracts b_dec before encoding: apply_b_dec_to_input=True"],
        },
    }
    cfg = SAEConfig(
        architecture=architecture, d_in=int(d_in), d_sae=int(d_sae), apply_b_dec_to_input=True,
        normalize_activations="none", metadata=metadata, **params,
    )
    sae: SAE = architecture_class(architecture)(cfg)
    sae.load_inference_tensors({k: tensors[k].float() for k in BASE_KEYS})
    return sae.eval()
