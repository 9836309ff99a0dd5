"""saev (OSU-NLP-Group) checkpoints: `sae.pt` is one JSON header line followed by a torch state dict
(W_enc [d, n], b_enc, W_dec [n, d], b_dec, optionally activation.threshold).

saev encodes x @ W_enc + b_enc without subtracting b_dec, so converted SAEs have
apply_b_dec_to_input=False. Its TopK keeps the k largest pre-activations without a ReLU; visae
(like SAELens) clamps them at zero, which only differs when a kept value is negative.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visae.core.file_hash import file_sha256
from visae.sae.config import SAEConfig
from visae.sae.converters.hooks import saev_hook
from visae.sae.converters.safe_load import load_weights_only, require_keys, tensor_dict
from visae.sae.registry import architecture_class

if TYPE_CHECKING:  # for the annotations only: sae.base imports the Hub client, which imports us
    from visae.sae.base import SAE

BASE_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")


def read_saev(path: Path) -> tuple[dict[str, Any], dict]:
    """The JSON header and the tensors of a saev checkpoint."""
    raw = Path(path).read_bytes()
    newline = raw.find(b"\n")
    try:
        header = json.loads(raw[:newline]) if newline > 0 else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a saev checkpoint: its first line is not a JSON header")
    tensors = tensor_dict(load_weights_only(raw[newline + 1 :], str(path)), str(path))
    require_keys(tensors, BASE_KEYS, str(path))
    return header, tensors


def _activation(header: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(class name, params) across saev's header schemas (none, 1, 2)."""
    cfg = header.get("cfg", header)
    activation = cfg.get("activation")
    if isinstance(activation, dict):
        return activation.get("cls", "Relu"), dict(activation.get("params") or {})
    if header.get("cls") in ("Relu", "TopK", "BatchTopK"):
        return header["cls"], {"top_k": cfg.get("top_k", 32)}
    return "Relu", {}


def saev_architecture(header: dict[str, Any], tensors: dict) -> tuple[str, dict[str, Any], list[str]]:
    """visae architecture, its parameters and notes on what the conversion changes."""
    name, params = _activation(header)
    if "activation.threshold" in tensors:
        return "jumprelu", {}, []
    if name == "Relu":
        return "standard", {}, []
    if name in ("TopK", "BatchTopK"):
        notes = ["saev's TopK keeps negative top-k values; visae clamps them at 0"]
        if name == "BatchTopK":
            notes.append("saev's BatchTopK encodes per sample at inference, which is TopK with the same k")
        return "topk", {"k": int(params.get("top_k", 32))}, notes
    raise ValueError(f"saev activation {name!r} has no visae equivalent (known: Relu, TopK, BatchTopK, JumpReLU)")


def convert_saev(
    path: str | Path, hook_name: str | None = None, model_name: str | None = None, source: str | None = None,
    layer: int | None = None,
) -> SAE:
    """A visae SAE with the same encode/decode as a saev checkpoint, recording the conversion in metadata."""
    path = Path(path)
    header, tensors = read_saev(path)
    architecture, params, notes = saev_architecture(header, tensors)
    d_in, d_sae = tensors["W_enc"].shape
    cfg_header = header.get("cfg", header)
    declared = cfg_header.get("d_vit", cfg_header.get("d_model"))
    if declared is not None and int(declared) != d_in:
        raise ValueError(f"{path}: header says d_vit={declared} but W_enc has shape {list(tensors['W_enc'].shape)}")
    if hook_name is None and layer is not None:
        hook_name = saev_hook(layer)
    metadata = {
        "model_name": model_name,
        "hook_name": hook_name,
        "conversion": {
            "from": "saev",
            "source": source or str(path),
            "source_sha256": file_sha256(path),
            "saev_header": {k: header.get(k) for k in ("schema", "lib", "commit") if k in header},
            "saev_activation": _activation(header)[0],
            "notes": ["saev does not subtract b_dec before encoding: apply_b_dec_to_input=False", *notes],
        },
    }
    cfg = SAEConfig(
        architecture=architecture, d_in=int(d_in), d_sae=int(d_sae), apply_b_dec_to_input=False,
        normalize_activations="none", metadata=metadata, **params,
    )
    sae: SAE = architecture_class(architecture)(cfg)
    weights = {k: tensors[k].float() for k in BASE_KEYS}
    if architecture == "jumprelu":
        weights["threshold"] = tensors["activation.threshold"].float()
    sae.load_inference_tensors(weights)
    return sae.eval()
