"""Low-rank generated weights applied without forming them: `W = W0 + U V^T` as `x W0^T + (x V) U^T`.

`LowRankHyperNetwork.factorized(cond)` gives `LowRankWeights` (the shared base `W0: [out, in]`, the
factors `U: [B, out, r]`, `V: [B, in, r]`, the other tensors whole); `TargetNetwork(x, those)`
comes here. Per sample, a `[B, out, in]` weight is never formed, in the forward pass or in the
backward: memory is `B r (out + in)` per matrix instead of `B out in`, and the work
`B T (out in + r (out + in))` instead of `B (out in r + T out in)` (T rows per sample: tokens).
One weight set for the whole batch (`U: [out, r]`) is merged into `W0 + U V^T` once, which is
cheaper than applying the factors to every row.

Only `linear` may receive a factored weight (a Linear layer's `weight`); anything else that meets
one raises, naming the function (nothing is broadcast silently). Conv weights are merged per
sample (`[B, out, in k k]`, for the grouped convolution), and a target on the `vmap` engine gets
the merged flat weights (`merge`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hypernet import batched_ops
from hypernet.hypernetworks.lowrank import LowRankWeights


class FactoredMode(batched_ops.PerSampleMode):
    """`PerSampleMode` in which `linear` also takes a factored weight: the placeholder `W0` (shared
    base) registered with its per-sample factors `U: [B, out, r]`, `V: [B, in, r]`."""

    def __init__(
        self,
        per_sample: Sequence[Tensor],
        factors: dict[int, tuple[Tensor, Tensor]],
        batch_size: int,
        batch_dim: int = 0,
    ) -> None:
        super().__init__(per_sample, batch_size, batch_dim)
        self.factors = factors

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            if isinstance(weight, Tensor) and id(weight) in self.factors:
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                return _factored_linear(self, args[0] if args else kwargs["input"], weight, bias)
        return super().__torch_function__(func, types, args, kwargs)


def _factored_linear(mode: FactoredMode, input: Tensor, w0: Tensor, bias: Tensor | None) -> Tensor:
    """`x W0^T + (x V) U^T + b` for `x: [B, ..., in]` (batch at `mode.batch_dim`)."""
    U, V = mode.factors[id(w0)]
    x = input.movedim(mode.batch_dim, 0) if mode.batch_dim else input
    batched_ops._check_batch(mode, x, 0, "linear")
    lead = x.shape[:-1]
    x3 = x.reshape(mode.B, -1, x.shape[-1])  # [B, T, in]
    y = torch.bmm(torch.bmm(x3, V), U.transpose(1, 2))  # [B, T, r] then [B, T, out]
    y = y + F.linear(x3, w0)  # the shared base, one matmul for the whole batch
    if bias is not None:
        y = y + mode.batched(bias).unsqueeze(1)
    y = y.reshape(*lead, y.shape[-1])
    return y.movedim(0, mode.batch_dim) if mode.batch_dim else y


def is_factored(weights: object) -> bool:
    return isinstance(weights, LowRankWeights)


def forward(
    module: nn.Module,
    weights: LowRankWeights,
    x: Any,
    batch: int | None,
    batch_dim: int,
    aliases: dict[str, str],
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> Any:
    """Run `module` (a `TargetNetwork`'s copy) on `x` with factored weights (see the module doc)."""
    per_sample = any(U.ndim == 3 for U, _ in weights.factors.values()) or _dense_per_sample(module, weights)
    params: dict[str, Tensor] = dict(weights.dense)
    if not per_sample:  # one weight set: merge each factor pair once
        for name, (U, V) in weights.factors.items():
            params[name] = weights.base[name] + (U @ V.transpose(-1, -2)).reshape(weights.base[name].shape)
        return functional_call(module, _with_aliases(params, aliases), (x, *args), kwargs)
    if batch is None:
        raise ValueError("x: per-sample weights need a Tensor input with a batch dimension")
    owners = dict(module.named_modules())
    factors: dict[int, tuple[Tensor, Tensor]] = {}
    for name, (U, V) in weights.factors.items():
        if U.ndim != 3 or U.shape[0] != batch:
            raise ValueError(f"factored weights: {name} has factors {list(U.shape)}, expected [{batch}, out, r]")
        w0 = weights.base[name]
        if isinstance(owners[name.rpartition(".")[0]], nn.Linear):
            params[name] = w0
            factors[id(w0)] = (U, V)
        else:  # a conv weight: merged per sample, for the grouped-convolution rule
            params[name] = w0 + (U @ V.transpose(1, 2)).reshape(batch, *w0.shape)
    for name, t in params.items():
        if id(t) not in factors and t.shape[0] != batch:
            raise ValueError(f"factored weights: {name} has shape {list(t.shape)}; expected [{batch}, ...]")
    tensors = list(params.values())
    with FactoredMode(tensors, factors, batch, batch_dim):
        return functional_call(module, _with_aliases(params, aliases), (x, *args), kwargs)


def _dense_per_sample(module: nn.Module, weights: LowRankWeights) -> bool:
    """Whether the whole tensors carry a batch dimension (one more than the module's own)."""
    for name, t in weights.dense.items():
        own = module.get_submodule(name.rpartition(".")[0])
        ref = getattr(own, name.rpartition(".")[2])
        return bool(t.ndim > ref.ndim)
    return False


def _with_aliases(params: dict[str, Tensor], aliases: dict[str, str]) -> dict[str, Tensor]:
    out = dict(params)
    for alias, name in aliases.items():
        out[alias] = out[name]
    return out


def merge(spec: Any, weights: LowRankWeights) -> Tensor:
    """The flat weights `[..., P]` that `weights` stand for (forms every `W0 + U V^T`)."""
    parts: dict[str, Tensor] = dict(weights.dense)
    for name, (U, V) in weights.factors.items():
        w0 = weights.base[name]
        parts[name] = w0 + (U @ V.transpose(-1, -2)).reshape(*U.shape[:-2], *w0.shape)
    out: Tensor = spec.flatten(parts)
    return out
