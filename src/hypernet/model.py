"""`HyperModel`: a target network paired with the hypernetwork (and conditioner) that feeds it.

Data flows one way: `cond -> conditioner -> hypernetwork -> theta -> target(x, theta) -> y`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from hypernet.conditioning import Conditioner, InputEncoding
from hypernet.hypernetworks.base import HyperNetwork
from hypernet.hypernetworks.lowrank import LowRankHyperNetwork
from hypernet.target import TargetNetwork


class HyperModel(nn.Module):
    """`model(x, cond)`: weights from `hypernetwork(conditioner(cond))`, then `target(x, weights)`.

    A condition `[C]` (or a scalar task id) gives one weight set shared by the batch; a batch of
    conditions `[B, C]` (or ids `[B]`) gives one weight set per sample.
    """

    def __init__(
        self, target: TargetNetwork, hypernetwork: HyperNetwork | nn.Module, conditioner: nn.Module | None = None
    ) -> None:
        super().__init__()
        if not isinstance(target, TargetNetwork):
            raise TypeError(f"target: expected a hypernet.TargetNetwork, got {type(target).__name__}")
        spec = getattr(hypernetwork, "spec", None)
        if spec is not None and spec != target.spec:
            raise ValueError(
                f"hypernetwork: generates a spec of {spec.numel} numbers that differs from the target's "
                f"({target.spec.numel}); build it with target.spec"
            )
        _check_conditioner(hypernetwork, conditioner)
        self.target, self.hypernetwork, self.conditioner = target, hypernetwork, conditioner

    def condition(self, x: Any, cond: Any) -> Tensor:
        """The hypernetwork input for batch `x` and condition `cond`."""
        if isinstance(self.conditioner, Conditioner):
            return self.conditioner.condition(x, cond)
        if cond is None:
            raise ValueError("cond: this HyperModel needs a condition, got None")
        if self.conditioner is None:
            return cond  # type: ignore[no-any-return]
        out: Tensor = self.conditioner(cond)
        return out

    def weights(self, cond: Any = None, x: Any = None) -> Tensor:
        """Generated weights `[P]` or `[B, P]` for `cond`."""
        out: Tensor = self.hypernetwork(self.condition(x, cond))
        if isinstance(out, Tensor) and out.ndim > 2:
            # name the condition here: the target would only see weights of an odd shape
            shape = list(getattr(cond, "shape", [])) or "given"
            raise ValueError(
                f"cond: {shape} gives weights {list(out.shape)}; pass one condition [C] (a task id: a scalar) "
                "or one per sample [B, C] (task ids: [B])"
            )
        return out

    def forward(self, x: Any, cond: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The target's output on `x: [B, ...]` with the weights generated for `cond`.

        `cond`: one condition for the batch (`[C]`, or a scalar task id) gives shared weights `[P]`
        (`P = target.spec.numel`); one per sample (`[B, C]`, task ids `[B]`) gives `[B, P]`. Extra
        arguments go to the target module."""
        if isinstance(self.hypernetwork, LowRankHyperNetwork):
            # the target applies W0 + U V^T as x W0^T + (x V) U^T: no per-sample [B, out, in] weight
            return self.target(x, self.hypernetwork.factorized(self.condition(x, cond)), *args, **kwargs)
        return self.target(x, self.weights(cond, x), *args, **kwargs)

    def materialize(self, cond: Any) -> nn.Module:
        """A plain, independent `nn.Module` with the weights generated for one condition."""
        return self.target.materialize(self.weights(cond))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimiser should update: `parameters()` that require a gradient (the hypernetwork,
        the conditioner and the target's parameters that are not generated; generated weights are
        not parameters of the model)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())


def _check_conditioner(hypernetwork: nn.Module, conditioner: nn.Module | None) -> None:
    """Refuse, at construction, a conditioner whose width differs from the hypernetwork's input, and
    MIP's encoding applied twice."""
    in_features = getattr(hypernetwork, "in_features", None)
    out_features = getattr(conditioner, "out_features", None)
    if isinstance(in_features, int) and isinstance(out_features, int) and in_features != out_features:
        raise ValueError(
            f"conditioner: {type(conditioner).__name__} gives {out_features} features, the hypernetwork takes "
            f"in_features={in_features}; build them with the same width"
        )
    encodes = bool(getattr(hypernetwork, "encodes_input", False))
    if encodes and isinstance(conditioner, InputEncoding) and conditioner.mode is not None:
        raise ValueError(
            "conditioner: InputEncoding encodes the condition, and the MIP hypernetwork encodes it again; drop "
            "the InputEncoding (the hypernetwork owns MIP's encoding) and pass the raw condition in [0, 1]"
        )
