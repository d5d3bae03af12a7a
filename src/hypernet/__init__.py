"""hypernet: hypernetworks for PyTorch, from any `nn.Module` target to infinite-width kernels."""

from hypernet.conditioning import DataEncoder, InputEncoding, NoiseConditioner, TaskEmbedding
from hypernet.hypernetworks import HyperNetwork, MLPHyperNetwork
from hypernet.model import HyperModel
from hypernet.spec import ParamSpec, TensorInfo
from hypernet.target import TargetNetwork

__version__ = "0.1.0"

__all__ = [
    "DataEncoder",
    "HyperModel",
    "HyperNetwork",
    "InputEncoding",
    "MLPHyperNetwork",
    "NoiseConditioner",
    "ParamSpec",
    "TargetNetwork",
    "TaskEmbedding",
    "TensorInfo",
]
