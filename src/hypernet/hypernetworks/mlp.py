"""`MLPHyperNetwork`: all weights at once from one MLP (the review's "all at once" output)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from hypernet.hypernetworks.base import HyperNetwork
from hypernet.init import init_hidden, init_output_layer
from hypernet.layers import make_linear, mlp_trunk, widths
from hypernet.spec import ParamSpec


class MLPHyperNetwork(HyperNetwork):
    """`cond: [..., in_features] -> [..., P]` through hidden layers `hidden` and one output layer.

    Args:
        in_features: size of the condition.
        spec: the target's `ParamSpec`.
        hidden: hidden widths (`()` for a single linear map).
        activation: hidden activation name.
        parametrization: `"standard"`, `"ntk"` or `"mip"`.
        init: `"default"`, `"hyperfan_in"`, `"hyperfan_out"`, `"mip"`; `None` picks per parametrization.
        encoding: MIP's input encoding, `"cos|sin"` (default under MIP), `"z|1-z"` or `None`.
        weight_var, bias_var: the `"ntk"` parametrization's variances (default 2.0, 0.0; an error otherwise).
        theta0: MIP's starting weights `[P]` (e.g. `target.initial_weights()`).
        residual: output `theta0 + delta` (default: only for MIP).
        norm: normalisation after each hidden linear layer: None, "batch" or "layer".
    """

    def __init__(
        self,
        in_features: int,
        spec: ParamSpec,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        parametrization: str = "standard",
        init: str | None = None,
        *,
        encoding: str | None = "default",
        theta0: Tensor | None = None,
        residual: bool | None = None,
        weight_var: float | None = None,
        bias_var: float | None = None,
        norm: str | None = None,
    ) -> None:
        super().__init__(in_features, spec, parametrization, init, encoding, theta0, residual, weight_var, bias_var)
        self.hidden = widths(hidden)
        self.trunk = mlp_trunk(
            self.features, self.hidden, activation, parametrization, self.weight_var, self.bias_var, norm=norm
        )
        width = self.hidden[-1] if self.hidden else self.features
        self.head = make_linear(width, spec.numel, parametrization, self.weight_var, self.bias_var)
        if parametrization != "ntk":
            init_hidden(self.trunk, self.init)
            assert isinstance(self.head, nn.Linear)
            init_output_layer(self.head, spec, self.init, residual=self.residual)

    def delta(self, h: Tensor) -> Tensor:
        out: Tensor = self.head(self.trunk(h))
        return out
