"""Interventions on one image with a served dictionary: switch features off or boost them inside the model's
forward pass and answer the predictions before and after (`eval.interventions`, docs/metrics.md)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from visae.core.image_bounds import ImageBoundsError
from visae.eval.interventions import intervene, typical_maxima
from visae.eval.output_reader import OutputReader
from visae.service.catalog import Dictionary
from visae.service.encode import model_for
from visae.service.errors import ApiError

MAX_EDITS = 64
TOP_PREDICTIONS = 5


@lru_cache(maxsize=8)
def _reader(model) -> OutputReader:
    """One reader per loaded model: a CLIP tower's vocabulary is embedded by its text tower once."""
    return OutputReader(model)


@lru_cache(maxsize=64)
def _typical_maxima(dictionary: Dictionary) -> np.ndarray:
    return typical_maxima(dictionary.results)


def intervention_json(dictionary: Dictionary, image: Image.Image, ablate: list[int], boost: list[int], scale: float,
                      hook: str | None, source: dict) -> dict:
    """The image's predictions clean and with `ablate` switched off and `boost` clamped to scale × their typical
    maximum (the median activation over their top evaluation images)."""
    if "intervene" in dictionary.refused:
        raise ApiError(409, "not_applicable", f"{dictionary.id}: {dictionary.refused['intervene']}")
    if len(ablate) + len(boost) > MAX_EDITS:
        raise ApiError(422, "too_many_edits", f"{len(ablate) + len(boost)} features edited at once; the limit is "
                                              f"{MAX_EDITS}")
    both = sorted(set(ablate) & set(boost))
    if both:
        raise ApiError(422, "conflicting_edits", f"features {both} are both switched off and boosted; pick one")
    model, lock = model_for(dictionary)
    try:
        model.preprocess.resize_crop(image.convert("RGB"))
    except ImageBoundsError as err:  # the model's resize would exceed the pixel budget
        raise ApiError(422, "image_too_large_to_resize", str(err)) from None
    try:
        with lock, torch.no_grad():
            result = intervene(model, dictionary.sae, [image], ablate=ablate, steer={j: scale for j in boost},
                               typical_max=_typical_maxima(dictionary), hook=hook, reader=_reader(model),
                               top=TOP_PREDICTIONS)
    except ValueError as err:  # a latent out of range, another hook, a boosted feature that never fired
        raise ApiError(422, "invalid_intervention", str(err)) from None
    labels = {j: dictionary.short_label(j) for j in [*ablate, *boost]}
    return {
        "dictionary": dictionary.id,
        "source": source,
        "hook": result.hook,
        "edit": {**result.edit, "labels": {str(j): label for j, label in labels.items()}},
        "predictions": result.predictions(0, TOP_PREDICTIONS),
        "summary": result.summary,
    }
