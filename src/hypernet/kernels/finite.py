"""Finite hypernetworks whose infinite-width limits are `hyper_nngp` / `hyper_ntk`: the same
description gives the module (for Monte Carlo and training) and the kernels."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hypernet.hypernetworks import MLPHyperNetwork
from hypernet.kernels.analytic import MLPDescription
from hypernet.kernels.hyper import hyper_nngp, hyper_ntk
from hypernet.model import HyperModel
from hypernet.target import TargetNetwork


@dataclass(frozen=True)
class HyperDescription:
    """`h(x, z) = g(x; f(z))`: `f` of `f_depth` hidden layers of width `n_f` (input `z: [.., d_z]`),
    `g` of `g_depth` hidden layers of width `n_g` (input `x: [.., d_x]`, `out_features` outputs),
    both in NTK parametrization with the same variances."""

    d_x: int
    d_z: int
    n_f: int
    n_g: int
    f_depth: int = 1
    g_depth: int = 1
    out_features: int = 1
    weight_var: float = 2.0
    bias_var: float = 0.0
    activation: str = "relu"

    def primary(self) -> MLPDescription:
        return MLPDescription(
            self.d_x, self.n_g, self.g_depth, self.out_features, self.weight_var, self.bias_var, self.activation
        )

    def module(self) -> HyperModel:
        """A freshly initialised finite hypernetwork (weights N(0, 1), NTK scaling in the forward)."""
        target = TargetNetwork(self.primary().module())
        hyper = MLPHyperNetwork(
            self.d_z,
            target.spec,
            hidden=(self.n_f,) * self.f_depth,
            activation=self.activation,
            parametrization="ntk",
            weight_var=self.weight_var,
            bias_var=self.bias_var,
        )
        return HyperModel(target, hyper)

    def nngp(self, x1: Tensor, z1: Tensor, x2: Tensor | None = None, z2: Tensor | None = None) -> Tensor:
        return hyper_nngp(x1, z1, x2, z2, self.f_depth, self.g_depth, self.weight_var, self.bias_var, self.activation)

    def ntk(self, x1: Tensor, z1: Tensor, x2: Tensor | None = None, z2: Tensor | None = None) -> Tensor:
        return hyper_ntk(x1, z1, x2, z2, self.f_depth, self.g_depth, self.weight_var, self.bias_var, self.activation)
