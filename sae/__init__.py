"""Sparse autoencoders: the dictionary itself, its file format and its Hub releases.

Imports nothing else from visae."""

from sae import topk  # noqa: F401  (registers the architecture)
from sae.base import SAE, LossOutput, TrainState, create_sae
from sae.config import SAEConfig
from sae.topk import TopKSAE

__all__ = ["SAE", "SAEConfig", "LossOutput", "TrainState", "TopKSAE", "create_sae"]
