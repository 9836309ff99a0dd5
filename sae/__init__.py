"""Sparse autoencoders: the dictionary itself, its file format and its Hub releases.

Imports nothing else from visae. Importing the package registers every architecture."""

from sae.base import SAE, LossOutput, TrainState, create_sae
from sae.batchtopk import BatchTopKSAE
from sae.config import SAEConfig
from sae.jumprelu import JumpReLUSAE
from sae.matryoshka_batchtopk import MatryoshkaBatchTopKSAE
from sae.standard import StandardSAE
from sae.topk import TopKSAE

__all__ = [
    "SAE",
    "SAEConfig",
    "LossOutput",
    "TrainState",
    "create_sae",
    "StandardSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaBatchTopKSAE",
]
