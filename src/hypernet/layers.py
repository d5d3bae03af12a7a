"""Small building blocks shared by the hypernetworks: dense layers in the standard or NTK
parametrization and MLP trunks (activations by name come from `hypernet.activations`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from hypernet.activations import ACTIVATIONS, make_activation

__all__ = ["ACTIVATIONS", "NORMS", "PARAMETRIZATIONS", "NTKLinear", "make_activation", "make_linear", "mlp_trunk"]

PARAMETRIZATIONS = ("standard", "ntk", "mip")
NORMS = (None, "batch", "layer")


def check_parametrization(parametrization: str) -> str:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization: unknown {parametrization!r}; choose one of {list(PARAMETRIZATIONS)}")
    return parametrization


class NTKLinear(nn.Module):
    """Dense layer in NTK parametrization: `sqrt(weight_var / fan_in) · W h + sqrt(bias_var) · b`,
    with `W, b ~ N(0, 1)` (neural-tangents' `stax.Dense(W_std=sqrt(weight_var), b_std=sqrt(bias_var))`).

    Shapes: `x: [..., in_features] -> [..., out_features]`.
    """

    def __init__(self, in_features: int, out_features: int, weight_var: float = 2.0, bias_var: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_var, self.bias_var = float(weight_var), float(bias_var)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.normal_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        w_scale = math.sqrt(self.weight_var / self.in_features)
        return nn.functional.linear(x, self.weight * w_scale, self.bias * math.sqrt(self.bias_var))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, weight_var={self.weight_var}, bias_var={self.bias_var}"


def make_linear(
    in_features: int, out_features: int, parametrization: str, weight_var: float = 2.0, bias_var: float = 0.0
) -> nn.Module:
    """`nn.Linear` for the standard and MIP parametrizations, `NTKLinear` for `"ntk"`."""
    if parametrization == "ntk":
        return NTKLinear(in_features, out_features, weight_var, bias_var)
    return nn.Linear(in_features, out_features)


class FeatureBatchNorm(nn.BatchNorm1d):
    """`BatchNorm1d` over the last dimension of `x: [..., features]`, statistics over all leading
    dimensions (so a trunk that sees `[B, T, F]`, as the chunked and layer-wise designs do, normalises
    each feature, not each of the `T` rows)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            return super().forward(x)
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def make_norm(norm: str | None, width: int) -> nn.Module | None:
    """The normalisation layer `norm` (None, "batch" or "layer") for `width` features."""
    if norm not in NORMS:
        raise ValueError(f"norm: unknown {norm!r}; choose one of {list(NORMS)}")
    if norm == "batch":
        return FeatureBatchNorm(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return None


def widths(hidden: Iterable[int]) -> tuple[int, ...]:
    """`hidden` as a tuple of int widths; anything else (one int, floats, strings) is refused by name
    (`int(h)` alone would take 64.5 as 64, and `hidden=64` failed with "'int' object is not iterable")."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise TypeError(f"hidden: expected a sequence of int widths such as (64,) or (128, 128), got {hidden!r}")
    items = list(hidden)
    if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) for h in items):
        raise TypeError(f"hidden: expected int widths, got {hidden!r}")
    return tuple(int(h) for h in items)


def mlp_trunk(
    in_features: int,
    hidden: tuple[int, ...],
    activation: str,
    parametrization: str,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    norm: str | None = None,
) -> nn.Sequential:
    """Hidden layers `in -> hidden[0] -> ... -> hidden[-1]`, each a linear layer, then `norm`
    (None, "batch" or "layer"), then the activation."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        if h <= 0:
            raise ValueError(f"hidden: widths must be positive, got {hidden}")
        layers.append(make_linear(width, h, parametrization, weight_var, bias_var))
        norm_layer = make_norm(norm, h)
        if norm_layer is not None:
            layers.append(norm_layer)
        layers.append(make_activation(activation))
        width = h
    return nn.Sequential(*layers)
