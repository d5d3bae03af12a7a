"""The hypernetwork designs: all at once (MLP), chunked, layer-wise and low-rank."""

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.hypernetworks.mlp import MLPHyperNetwork

__all__ = ["HyperNetwork", "MLPHyperNetwork"]
