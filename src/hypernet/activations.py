"""The one table of activations by name, shared by the hypernetworks' layers, the kernel rules
(`hypernet.kernels.activations`) and the kernel descriptions' finite modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Erf(nn.Module):
    """`erf(x)` as a module (the activation with a closed-form infinite-width kernel)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.erf(x)


class Activation(NamedTuple):
    module: Callable[[], nn.Module]  # a fresh module
    fn: Callable[[Tensor], Tensor]  # the same function, elementwise


def _identity(x: Tensor) -> Tensor:
    return x


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(nn.ReLU, torch.relu),
    "leaky_relu": Activation(nn.LeakyReLU, F.leaky_relu),
    "gelu": Activation(nn.GELU, F.gelu),
    "silu": Activation(nn.SiLU, F.silu),
    "tanh": Activation(nn.Tanh, torch.tanh),
    "elu": Activation(nn.ELU, F.elu),
    "sigmoid": Activation(nn.Sigmoid, torch.sigmoid),
    "erf": Activation(Erf, torch.erf),
    "identity": Activation(nn.Identity, _identity),
}


def get_activation(name: str) -> Activation:
    """The table entry of `name`, or a `ValueError` listing the known names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation: unknown {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (`"relu"`, `"gelu"`, `"erf"`, ...)."""
    return get_activation(name).module()
