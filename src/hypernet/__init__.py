"""hypernet: hypernetworks for PyTorch, from any `nn.Module` target to infinite-width kernels."""

from hypernet import kernels
from hypernet.batched_ops import NoBatchedRule, register_rule
from hypernet.conditioning import DataEncoder, InputEncoding, NoiseConditioner, TaskEmbedding, TaskOneHot
from hypernet.convert import hypernetize
from hypernet.hypernetworks import (
    ChunkedHyperNetwork,
    HyperNetwork,
    LayerwiseHyperNetwork,
    LowRankHyperNetwork,
    LowRankWeights,
    MLPHyperNetwork,
)
from hypernet.model import HyperModel
from hypernet.serialization import load, save
from hypernet.spec import ParamSpec, TensorInfo
from hypernet.target import TargetNetwork

__version__ = "0.1.0"

__all__ = [
    "ChunkedHyperNetwork",
    "DataEncoder",
    "HyperModel",
    "HyperNetwork",
    "InputEncoding",
    "LayerwiseHyperNetwork",
    "LowRankHyperNetwork",
    "LowRankWeights",
    "MLPHyperNetwork",
    "NoBatchedRule",
    "NoiseConditioner",
    "ParamSpec",
    "TargetNetwork",
    "TaskEmbedding",
    "TaskOneHot",
    "TensorInfo",
    "hypernetize",
    "kernels",
    "load",
    "register_rule",
    "save",
]
