"""Sparse autoencoders: the dictionary itself, its file format and its Hub releases.

Imports nothing else from visae. Importing the package registers every architecture; `sae.registry` lists
them (`architecture_names`) with the traits each declares (`architecture_traits`)."""

from visae.sae.base import SAE, LossOutput, TrainState, create_sae
from visae.sae.batchtopk import BatchTopKSAE
from visae.sae.config import SAEConfig
from visae.sae.crosscoder import CrossCoder
from visae.sae.jumprelu import JumpReLUSAE
from visae.sae.matryoshka_batchtopk import MatryoshkaBatchTopKSAE
from visae.sae.registry import ArchitectureTraits, architecture_class, architecture_names, architecture_traits
from visae.sae.standard import StandardSAE
from visae.sae.topk import TopKSAE
from visae.sae.transcoder import (
    BatchTopKSkipTranscoder,
    BatchTopKTranscoder,
    JumpReLUSkipTranscoder,
    JumpReLUTranscoder,
    ReLUSkipTranscoder,
    ReLUTranscoder,
    SkipTranscoder,
    TopKSkipTranscoder,
    TopKTranscoder,
    Transcoder,
)

__all__ = [
    "SAE",
    "SAEConfig",
    "LossOutput",
    "TrainState",
    "create_sae",
    "ArchitectureTraits",
    "architecture_class",
    "architecture_names",
    "architecture_traits",
    "StandardSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaBatchTopKSAE",
    "Transcoder",
    "SkipTranscoder",
    "TopKTranscoder",
    "TopKSkipTranscoder",
    "BatchTopKTranscoder",
    "BatchTopKSkipTranscoder",
    "JumpReLUTranscoder",
    "JumpReLUSkipTranscoder",
    "ReLUTranscoder",
    "ReLUSkipTranscoder",
    "CrossCoder",
]
