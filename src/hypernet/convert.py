"""`hypernetize`: turn an existing (possibly pretrained) model into a `HyperModel` in one call,
like hyperlight's `hypernetize` and PEFT's target-module selection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from hypernet.hypernetworks import (
    ChunkedHyperNetwork,
    HyperNetwork,
    LayerwiseHyperNetwork,
    LowRankHyperNetwork,
    MLPHyperNetwork,
)
from hypernet.model import HyperModel
from hypernet.selection import Selector
from hypernet.target import TargetNetwork

_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

DESIGNS: dict[str, Callable[..., HyperNetwork]] = {
    "mlp": MLPHyperNetwork,
    "chunked": ChunkedHyperNetwork,
    "layerwise": LayerwiseHyperNetwork,
    "lowrank": LowRankHyperNetwork,
}


def hypernetize(
    module: nn.Module,
    cond_features: int,
    generate: Selector | str = "layers",
    parametrization: str = "mip",
    hidden: tuple[int, ...] = (64, 64),
    design: str = "mlp",
    zero_init: bool = False,
    conditioner: nn.Module | None = None,
    **design_kwargs: Any,
) -> HyperModel:
    """Wrap `module` so the parameters selected by `generate` come from a hypernetwork of `cond`.

    The hypernetwork is residual: `theta = theta0 + delta(cond)` with `theta0` starting at the
    module's current weights, so a pretrained model keeps what it learned. With `zero_init=True`
    the output layer starts at zero and the converted model reproduces the original's outputs
    exactly. `parametrization="mip"` (default) also encodes `cond` (in [0, 1]) with `cos|sin`.

    Args:
        module: the model to convert; never mutated.
        cond_features: size of the condition `cond: [..., cond_features]`.
        generate: which parameters to generate (names, globs or module types); `"layers"`
            (default) selects every Linear and Conv layer the module has.
        design: `"mlp"`, `"chunked"`, `"layerwise"` or `"lowrank"`; `design_kwargs` go to it.
    """
    if design not in DESIGNS:
        raise ValueError(f"design: unknown {design!r}; choose one of {sorted(DESIGNS)}")
    if generate == "layers":
        generate = [t for t in _LAYER_TYPES if any(isinstance(m, t) for m in module.modules())] or None
    target = TargetNetwork(module, generate)
    theta0 = target.initial_weights()
    extra: dict[str, Any] = {} if design == "lowrank" else {"residual": True}
    hyper = DESIGNS[design](
        cond_features,
        target.spec,
        hidden=hidden,
        parametrization=parametrization,
        theta0=theta0,
        **extra,
        **design_kwargs,
    )
    if zero_init:
        hyper.zero_delta_()
    ref = next(iter(module.parameters()))
    return HyperModel(target, hyper.to(device=ref.device, dtype=ref.dtype), conditioner)
