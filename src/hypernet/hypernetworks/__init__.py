"""The hypernetwork designs: all at once (MLP), chunked, layer-wise (component-wise) and low-rank."""

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.hypernetworks.chunked import ChunkedHyperNetwork
from hypernet.hypernetworks.layerwise import LayerwiseHyperNetwork
from hypernet.hypernetworks.lowrank import LowRankHyperNetwork, LowRankWeights
from hypernet.hypernetworks.mlp import MLPHyperNetwork

__all__ = [
    "ChunkedHyperNetwork",
    "HyperNetwork",
    "LayerwiseHyperNetwork",
    "LowRankHyperNetwork",
    "LowRankWeights",
    "MLPHyperNetwork",
]
