"""Reading and writing one SAE folder in SAELens's format (docs/dictionary-formats.md), with validation.

A folder holds `cfg.json`, `sae_weights.safetensors` and optionally `sparsity.safetensors`
(key `sparsity`: log10 firing frequency, [d_sae]). Writes go to a temporary sibling folder that
is renamed into place, so a crash never leaves a complete-looking half-written folder.
Pickles are refused outright: they can run code when loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from visae.core.atomic import atomic_folder
from visae.sae.registry import architecture_class, architecture_names, architecture_traits

if TYPE_CHECKING:
    from jaxtyping import Float

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


def expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor keys and shapes a folder with this cfg.json must hold (each architecture's `file_shapes`)."""
    return architecture_class(cfg["architecture"]).file_shapes(cfg)


def write_sae_folder(
    path: str | Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
    sparsity: Float[Tensor, " d_sae"] | None = None, extra_files: dict[str, dict[str, Tensor]] | None = None,
) -> Path:
    """Write cfg.json + weights (+ sparsity, + `extra_files`: further safetensors files by name) to `path`,
    replacing any previous folder atomically."""
    path = Path(path)
    check_tensors(cfg, tensors, source=str(path))
    dtype = _torch_dtype(cfg.get("dtype", "float32"), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(path) as tmp:
        # serialised in memory, then written by Python, so a full disk is an OSError (ENOSPC) like any other write
        weights = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
        (tmp / WEIGHTS_FILE).write_bytes(save(weights))
        if sparsity is not None:
            if tuple(sparsity.shape) != (int(cfg["d_sae"]),):
                raise ValueError(f"sparsity must have shape [d_sae={cfg['d_sae']}], got {list(sparsity.shape)}")
            firing = sparsity.detach().to("cpu", torch.float32).contiguous()
            (tmp / SPARSITY_FILE).write_bytes(save({"sparsity": firing}))
        for name, contents in (extra_files or {}).items():
            (tmp / name).write_bytes(save({k: v.detach().cpu().contiguous() for k, v in contents.items()}))
        (tmp / CFG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return path


def read_sae_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """cfg.json and weights of a folder, after every check in this module."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no SAE folder at {path}")
    refuse_pickles(path)
    cfg = read_cfg(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}; an SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}")
    tensors = read_safetensors(weights)
    check_tensors(cfg, tensors, source=str(weights))
    dtype = _torch_dtype(cfg.get("dtype", "float32"), source=str(path / CFG_FILE))
    return cfg, {k: v.to(dtype) for k, v in tensors.items()}


def read_sparsity(path: str | Path) -> Float[Tensor, " d_sae"] | None:
    """log10 firing frequency per latent, if the folder has it."""
    file = Path(path) / SPARSITY_FILE
    return read_safetensors(file)["sparsity"] if file.is_file() else None


def read_cfg(path: Path) -> dict[str, Any]:
    file = path / CFG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no {CFG_FILE}; an SAE folder holds {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    missing = [k for k in ("architecture", "d_in", "d_sae") if k not in cfg]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}; it must name the architecture, d_in and d_sae")
    if cfg["architecture"] not in architecture_names():
        raise ValueError(
            f"{file}: unknown architecture {cfg['architecture']!r}; visae loads {', '.join(architecture_names())}"
        )
    if architecture_traits(cfg["architecture"]).uses_k:  # without k it would load as SAEConfig's default, silently
        k = cfg.get("k")
        if k is None:
            raise ValueError(f"{file}: a {cfg['architecture']} dictionary needs the field `k` (active latents per "
                             "token) and it is missing; add the k it was trained with, e.g. \"k\": 32")
        whole = (isinstance(k, int) and not isinstance(k, bool)) or (isinstance(k, float) and k.is_integer())
        if not whole or not 0 < k <= int(cfg["d_sae"]):
            raise ValueError(f"{file}: the field `k` must be a whole number in 1..d_sae={cfg['d_sae']}, got {k!r}")
    if cfg.get("normalize_activations", "none") not in ("none", None, False):
        raise ValueError(
            f"{file}: normalize_activations={cfg['normalize_activations']!r} needs a scaling factor that is not in "
            "the folder; fold the factor into the weights and set normalize_activations to 'none'"
        )
    if cfg.get("reshape_activations", "none") != "none":
        raise ValueError(
            f"{file}: reshape_activations={cfg['reshape_activations']!r} is for attention heads; visae needs 'none'"
        )
    return cfg


def refuse_pickles(path: Path) -> None:
    for file in sorted(path.iterdir()):
        if file.suffix in PICKLE_SUFFIXES or (file.suffix == ".safetensors" and _is_pickle(file)):
            raise ValueError(
                f"{file} is a pickle-based file; visae refuses pickles in an SAE folder because loading one can "
                "run arbitrary code. Convert it with `visae convert` or save the weights as safetensors"
            )


def _is_pickle(file: Path) -> bool:
    """A raw pickle (protocol 2-5 opcode) or a torch zip archive, and not a safetensors header."""
    with open(file, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < file.stat().st_size:
        return False
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:2] == b"PK"


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if _is_pickle(file):
        raise ValueError(f"{file} is a pickle or torch zip archive, not safetensors; visae refuses pickles")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{file} is not a readable safetensors file: {err}") from err


def check_tensors(cfg: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse missing keys, shapes that disagree with cfg.json, and non-finite weights."""
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise ValueError(f"{source} lacks tensor(s) {', '.join(missing)} needed by a {cfg['architecture']} SAE")
    for key, shape in shapes.items():
        if tuple(tensors[key].shape) != shape:
            dims = ", ".join(f"{name}={cfg[name]}" for name in ("d_in", "d_out", "hook_dims", "d_sae") if name in cfg)
            raise ValueError(f"{source}: {key} has shape {list(tensors[key].shape)} but cfg.json ({dims}) needs "
                             f"{list(shape)}")
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            if key == "threshold" and not bool(torch.isnan(tensor).any()):
                continue
            raise ValueError(f"{source}: {key} holds NaN or infinite values; the weights are corrupt")


def _torch_dtype(name: str, source: str) -> torch.dtype:
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{source}: dtype {name!r} is not a floating-point torch dtype")
    return dtype


