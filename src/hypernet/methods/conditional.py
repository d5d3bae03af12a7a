"""Hyperparameter-conditioned training: one hypernetwork generates the target's weights for every
value of a hyperparameter, so one training run stands in for a sweep of separate trainings.

Each step draws values `lambda_k` of the hyperparameter (uniform in its unit scale: log-uniform for
a log range), generates `theta(lambda_k)` and descends on the mean of the objective at each
`lambda_k`: the hypernetwork learns to approximate the best response `lambda -> theta*(lambda)`
over the whole range (Lorraine & Duvenaud 2018, "Stochastic hyperparameter optimization through
hypernetworks"; MacKay et al. 2019, "Self-Tuning Networks", ICLR; Dosovitskiy & Djolonga 2020,
"You only train once: loss-conditional training of deep networks", ICLR). After training, the
validation loss of `theta(lambda)` is read off at any `lambda` for free.

The hypernetwork is MIP-parametrized (Ortiz et al. 2024): the value is mapped to `z in [0, 1]`
(`HyperparameterRange.to_unit`), encoded as `[cos(pi z / 2), sin(pi z / 2)]`, and the output is
`theta0 + delta(z)` with `theta0` the target's own initial weights.

Use with your own target:

    hp = HyperparameterRange("weight_decay", 1e-5, 1e-1)
    model = ConditionalModel(my_module, hp, hidden=(32,))
    objective = WeightDecay()                       # cross-entropy + lambda/2 ||theta||^2
    values = hp.sample(4, generator)                # 4 draws per step
    loss = conditional_loss(model, objective, [(x1, y1), ..., (x4, y4)], values)
    curve = loss_curve(model, hp.grid(20), x_val, y_val)

A plain network trained at one value with `plain_loss(module, objective, x, y, value)` optimises
the same objective (the baseline sweep).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.hypernetworks.mlp import MLPHyperNetwork
from hypernet.selection import Selector
from hypernet.target import TargetNetwork
from hypernet.train.distributed import ObjectiveModule

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class HyperparameterRange:
    """A hyperparameter's range `[low, high]` and its unit scale `z in [0, 1]`: log
    (`lambda = low (high / low)^z`, default) or linear (`lambda = low + (high - low) z`)."""

    name: str
    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise ValueError(f"{self.name}: need finite low < high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log range needs low > 0, got low={self.low!r}; pass log=False")

    def to_unit(self, value: Tensor | float) -> Tensor:
        """`lambda -> z` (float64 for a float). Values outside the range (beyond rounding) raise a `ValueError`."""
        v = value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)
        slack = 1e-9 * max(abs(self.low), abs(self.high))  # the round trip exp(log(.)) of the ends, no more
        if v.numel() and bool(((v < self.low - slack) | (v > self.high + slack) | ~torch.isfinite(v)).any()):
            raise ValueError(
                f"{self.name}: values must lie in [{self.low:g}, {self.high:g}], got range "
                f"[{float(v.min()):.4g}, {float(v.max()):.4g}]"
            )
        if self.log:
            z = (torch.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        else:
            z = (v - self.low) / (self.high - self.low)
        return z.clamp(0.0, 1.0)  # rounding at the ends only

    def from_unit(self, z: Tensor) -> Tensor:
        """`z in [0, 1] -> lambda` (same shape)."""
        if self.log:
            return torch.exp(math.log(self.low) + z * (math.log(self.high) - math.log(self.low)))
        return self.low + z * (self.high - self.low)

    def grid(self, n: int) -> Tensor:
        """`n >= 2` values evenly spaced in the unit scale, ends included: `[n]` (float64)."""
        if n < 2:
            raise ValueError(f"grid: n must be >= 2, got {n}")
        return self.from_unit(torch.linspace(0, 1, n, dtype=torch.float64))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` values drawn uniformly in the unit scale: `[n]` (float64)."""
        return self.from_unit(torch.rand(n, generator=generator, dtype=torch.float64))


class Objective(Protocol):
    """The training loss at one hyperparameter value: `(output [B, ...], y [B], weights [P],
    value) -> scalar`, `weights` the flat weights the output was computed with."""

    def __call__(self, output: Tensor, y: Tensor, weights: Tensor, value: float) -> Tensor: ...


class WeightDecay:
    """`loss(output, y) + value / 2 * ||weights||^2` (an L2 penalty on every weight given)."""

    def __init__(self, loss: LossFn = F.cross_entropy) -> None:
        self.loss = loss

    def __call__(self, output: Tensor, y: Tensor, weights: Tensor, value: float) -> Tensor:
        return self.loss(output, y) + 0.5 * value * weights.pow(2).sum()


class LossMixing:
    """`(1 - value) * first(output, y) + value * second(output, y)`, `value in [0, 1]` (a
    loss-mixing weight, as in loss-conditional training)."""

    def __init__(self, first: LossFn, second: LossFn) -> None:
        self.first, self.second = first, second

    def __call__(self, output: Tensor, y: Tensor, weights: Tensor, value: float) -> Tensor:
        return (1 - value) * self.first(output, y) + value * self.second(output, y)


class ConditionalModel(nn.Module):
    """A target module whose weights a MIP hypernetwork generates from one hyperparameter.

    Args:
        module: the target (any `nn.Module`; its current weights become MIP's `theta0`).
        hyperparameter: the range the model covers.
        hidden: hidden widths of the hypernetwork.
        encoding: MIP's input encoding, `"cos|sin"` or `"z|1-z"`.
        generate: which target parameters are generated (`TargetNetwork`'s `generate=`; None: all).
    """

    def __init__(
        self,
        module: nn.Module,
        hyperparameter: HyperparameterRange,
        hidden: Sequence[int] = (32,),
        encoding: str = "cos|sin",
        generate: Selector = None,
    ) -> None:
        super().__init__()
        if not isinstance(hyperparameter, HyperparameterRange):
            raise TypeError(f"hyperparameter: expected a HyperparameterRange, got {type(hyperparameter).__name__}")
        self.hyperparameter = hyperparameter
        self.target = TargetNetwork(module, generate)
        self.hyper = MLPHyperNetwork(
            1,
            self.target.spec,
            hidden=hidden,
            parametrization="mip",
            encoding=encoding,
            theta0=self.target.initial_weights(),
        )

    def weights(self, value: Tensor | float) -> Tensor:
        """Generated weights: a float or `[]` value -> `[P]`, values `[K]` -> `[K, P]`."""
        z = self.hyperparameter.to_unit(value)
        dtype = self.hyper._dtype()
        out: Tensor = self.hyper(z.reshape(-1, 1).to(dtype))  # [K, P]
        return out[0] if z.ndim == 0 else out

    def forward(self, x: Tensor, value: Tensor | float) -> Tensor:
        """`x: [B, ...]`; `value` a float (one network for the batch) or `[B]` (one per sample)."""
        out: Tensor = self.target(x, self.weights(value))
        return out

    def materialize(self, value: float) -> nn.Module:
        """A plain, independent module with the weights generated for `value`."""
        return self.target.materialize(self.weights(float(value)).detach())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The hypernetwork's parameters (and any target parameters left ungenerated)."""
        return [p for p in self.parameters() if p.requires_grad]


def conditional_loss(
    model: ConditionalModel,
    objective: Objective,
    batches: Sequence[tuple[Tensor, Tensor]],
    values: Tensor,
    shares: Sequence[float] | None = None,
) -> Tensor:
    """Mean over `k` of `objective(target(x_k, theta(v_k)), y_k, theta(v_k), v_k)`: `batches[k] = (x_k, y_k)`,
    `values: [K]` (one batch per value; one generated network each).

    `shares`: each batch's term multiplied by `shares[k]`: in a multi-process run, `b_k W / B_k`
    for a process's part of `b_k` rows of value `k`'s batch of `B_k` over `W` processes, so that
    the mean over the processes is the whole batches' loss even when a batch does not split evenly
    (the penalty, the same on every process, keeps weight `mean_r shares = 1`)."""
    if not len(batches):
        raise ValueError("batches: expected at least one (x, y) batch, got none")
    if values.ndim != 1 or values.shape[0] != len(batches):
        raise ValueError(f"values: expected shape [{len(batches)}] (one per batch), got {list(values.shape)}")
    if shares is not None and len(shares) != len(batches):
        raise ValueError(f"shares: expected {len(batches)} (one per batch), got {len(shares)}")
    weights = model.weights(values)  # [K, P]: one hypernetwork call for every value
    total = weights.new_zeros(())
    for k, (x, y) in enumerate(batches):
        term = objective(model.target(x, weights[k]), y, weights[k], float(values[k]))
        total = total + (term if shares is None else shares[k] * term)
    return total / len(batches)


class ConditionalLoss(ObjectiveModule):
    """`conditional_loss(model, ...)` as a module's forward, so that DDP wraps the whole objective
    (the hypernetwork's one call for every value and each value's loss):
    `forward(objective, batches, values, shares) -> loss`; its state is `model`'s
    (`distributed.ObjectiveModule`)."""

    def __init__(self, model: ConditionalModel) -> None:
        super().__init__(model, functools.partial(conditional_loss, model))


def plain_loss(module: nn.Module, objective: Objective, x: Tensor, y: Tensor, value: float) -> Tensor:
    """The same objective for a plain module trained at one `value` (its weights flattened in
    `named_parameters` order, as `TargetNetwork` flattens them). `module` may be a DDP wrapper
    (its forward then averages the gradients; its parameters are the wrapped module's, in order)."""
    flat = torch.cat([p.reshape(-1) for p in module.parameters()])
    return objective(module(x), y, flat, float(value))


@torch.no_grad()
def loss_curve(model: ConditionalModel, values: Tensor, x: Tensor, y: Tensor, loss: LossFn = F.cross_entropy) -> Tensor:
    """`loss(target(x, theta(v)), y)` for each of `values: [K]` -> `[K]` (float64)."""
    if values.ndim != 1:
        raise ValueError(f"values: expected [K] (one hyperparameter value each), got shape {list(values.shape)}")
    weights = model.weights(values)
    return torch.tensor([float(loss(model.target(x, w), y)) for w in weights], dtype=torch.float64)


def weight_norms(model: ConditionalModel, values: Tensor) -> Tensor:
    """`||theta(v)||_2` for each of `values: [K]` -> `[K]` (float64)."""
    with torch.no_grad():
        return model.weights(values.reshape(-1)).double().norm(dim=-1)
