"""Sparse autoencoders: the dictionary itself, its file format and its Hub releases.

Imports nothing else from visae. Importing the package registers every architecture."""

from visae.sae.base import SAE, LossOutput, TrainState, create_sae
from visae.sae.batchtopk import BatchTopKSAE
from visae.sae.config import SAEConfig
from visae.sae.jumprelu import JumpReLUSAE
from visae.sae.matryoshka_batchtopk import MatryoshkaBatchTopKSAE
from visae.sae.standard import StandardSAE
from visae.sae.topk import TopKSAE

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
