"""Encoding one image with a served dictionary: the model's activation at the dictionary's hook, through the SAE,
summarised as the image's top features with patch heatmaps and each patch's own top features."""

from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from visae.activation_store.models import VisionModel, load_model
from visae.core.image_bounds import ImageBoundsError
from visae.service.catalog import Dictionary
from visae.service.errors import ApiError

TOP_FEATURES = 16
PATCH_TOP = 3

_models: dict[tuple[str, str | None, str], tuple[VisionModel, threading.Lock]] = {}
_models_lock = threading.Lock()


def model_for(dictionary: Dictionary) -> tuple[VisionModel, threading.Lock]:
    """The dictionary's vision model, loaded once per spec and shared, with the lock that serialises its
    forward passes (capture hooks are attached to the shared module during a pass)."""
    spec = dictionary.model
    if not spec:
        raise ApiError(409, "no_model", f"{dictionary.id} does not record its model spec, so images cannot be encoded")
    key = (spec, dictionary.weights, dictionary.device)
    with _models_lock:
        if key not in _models:
            try:
                _models[key] = (load_model(spec, dictionary.weights, device=dictionary.device), threading.Lock())
            except Exception as err:
                raise ApiError(503, "model_unavailable",
                               f"the model {spec!r} could not be loaded ({err}); encoding needs its weights "
                               "locally (library cache, the shipped toy model, or `visae serve --weights`)") from None
        return _models[key]


@dataclass
class Encoding:
    pixels: np.ndarray  # uint8 [H, W, 3]: the preprocessed image the model saw
    image_acts: np.ndarray  # float32 [d_sae]: max over the dictionary's tokens
    patch_acts: np.ndarray | None  # float32 [rows, cols, d_sae], None when the dictionary is not over patches


def encode_image(dictionary: Dictionary, image: Image.Image) -> Encoding:
    """The image through the dictionary's model and encoder: an SAE's or transcoder's input hook, or every hook a
    crosscoder reads, side by side."""
    if "encode" in dictionary.refused:
        raise ApiError(409, "not_applicable", f"{dictionary.id} cannot encode images: {dictionary.refused['encode']}")
    model, lock = model_for(dictionary)
    if not dictionary.hooks.read:
        raise ApiError(409, "no_hook", f"{dictionary.id} does not record its hook point, so images cannot be encoded")
    try:
        shown = model.preprocess.resize_crop(image.convert("RGB"))
    except ImageBoundsError as err:  # the model's resize would exceed the pixel budget
        raise ApiError(422, "image_too_large_to_resize", str(err)) from None
    pixels = model.preprocess(image.convert("RGB"))
    hooks = [model.canonical(hook) for hook in dictionary.hooks.read]
    layout = model.layout
    with lock, torch.no_grad():
        cache = model.run_with_cache(pixels[None].to(model.device), hooks)
        acts = torch.cat([cache[hook][0] for hook in hooks], dim=-1).float().cpu()
        codes = dictionary.sae.encode(acts.to(dictionary.sae.W_dec.dtype)).float()
    kind = dictionary.token_kind
    kept = torch.as_tensor(layout.indices(kind), dtype=torch.long)
    image_acts = codes[kept].amax(dim=0).numpy()
    patch_acts = None
    if kind in ("patches", "all") and layout.grid[0] * layout.grid[1] > 0:
        rows, cols = layout.grid
        patch_acts = codes[torch.as_tensor(layout.indices("patches"))].reshape(rows, cols, -1).numpy()
    return Encoding(pixels=np.asarray(shown.convert("RGB"), dtype=np.uint8), image_acts=image_acts,
                    patch_acts=patch_acts)


def encoding_json(dictionary: Dictionary, encoding: Encoding, source: dict) -> dict:
    """The encode answer: top features (with per-patch heatmaps) and each patch's top features."""
    acts = encoding.image_acts
    top_values, top_indices = torch.from_numpy(acts).topk(min(TOP_FEATURES, acts.size))
    order = [int(i) for v, i in zip(top_values.tolist(), top_indices.tolist()) if v > 0]
    patches = encoding.patch_acts
    top = [{"feature": f, "activation": round(float(acts[f]), 5), "label": dictionary.short_label(f),
            "page": f"/d/{dictionary.id}/features/{f}",
            "heatmap": None if patches is None else np.round(patches[..., f], 4).tolist()} for f in order]
    return {
        "dictionary": dictionary.id,
        "source": source,
        "token_kind": dictionary.token_kind,
        "refused": dictionary.refused,
        "image": _data_url(encoding.pixels),
        "size": list(encoding.pixels.shape[:2]),
        "grid": None if patches is None else list(patches.shape[:2]),
        "n_active": int((acts > 0).sum()),
        "top_features": top,
        "patches": None if patches is None else _patch_tops(patches),
    }


def _patch_tops(patches: np.ndarray) -> list[list[list[dict]]]:
    values, indices = torch.from_numpy(np.ascontiguousarray(patches)).topk(min(PATCH_TOP, patches.shape[-1]), dim=-1)
    return [[[{"feature": int(f), "activation": round(float(v), 4)} for v, f in zip(vs, fs) if v > 0]
             for vs, fs in zip(row_values.tolist(), row_indices.tolist())]
            for row_values, row_indices in zip(values, indices)]


def _data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
