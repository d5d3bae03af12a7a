"""`hypernetize`: turn an existing (possibly pretrained) model into a `HyperModel` in one call,
like hyperlight's `hypernetize` and PEFT's target-module selection, keeping its outputs at the start."""

from __future__ import annotations

import warnings
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
    design: str = "auto",
    zero_init: bool = True,
    conditioner: nn.Module | None = None,
    max_head_params: int = 10_000_000,
    **design_kwargs: Any,
) -> HyperModel:
    """Wrap a copy of `module` so the parameters selected by `generate` come from a hypernetwork of `cond`.

    The user's `module` is copied, never changed (see `TargetNetwork`); the generated weights are
    not copied: they live once, as the hypernetwork's `theta0`. The hypernetwork is residual,
    `theta = theta0 + delta(cond)`, with `theta0` starting at the module's current weights.

    By default (`zero_init=True`) the output layer of `delta` starts at zero, so the converted model
    computes exactly what the original did, for every condition, until it trains. This departs from
    MIP's own initialisation (a non-zero output layer, so different conditions start apart); pass
    `zero_init=False` to get MIP's. Training still moves at once: the zero layer's gradient is
    `features x error`, which is not zero.

    Args:
        module: the model to convert; never mutated.
        cond_features: size of the condition `cond: [..., cond_features]` (in [0, 1] under MIP).
        generate: which parameters to generate (names, globs or module types); `"layers"`
            (default) selects every Linear and Conv layer the module has.
        parametrization: `"mip"` (default), `"standard"` or `"ntk"` (see `HyperNetwork`).
        hidden: hidden widths of the hypernetwork.
        design: `"auto"` (default: all at once, unless that head would exceed `max_head_params`,
            then chunked, with a warning giving both counts), `"mlp"`, `"chunked"`, `"layerwise"`
            or `"lowrank"`; `design_kwargs` go to the design.
        zero_init: start exactly at the original model (see above).
        conditioner: an optional conditioner module (e.g. `hn.TaskOneHot`) in front of the hypernetwork.
        max_head_params: the largest all-at-once output layer `design="auto"` builds.
    """
    if design != "auto" and design not in DESIGNS:
        raise ValueError(f"design: unknown {design!r}; choose 'auto' or one of {sorted(DESIGNS)}")
    if max_head_params <= 0:
        raise ValueError(f"max_head_params: must be positive, got {max_head_params}")
    if generate == "layers":
        generate = [t for t in _LAYER_TYPES if any(isinstance(m, t) for m in module.modules())] or None
    target = TargetNetwork(module, generate)
    if design == "auto":
        width = hidden[-1] if hidden else cond_features  # what the output layer reads
        design = _auto_design(target.spec.numel, width, max_head_params)
        if design == "chunked":  # chunks no longer than the whole vector, nor than the bound allows
            design_kwargs.setdefault("chunk_size", max(1, min(4096, target.spec.numel, max_head_params // (width + 1))))
    extra: dict[str, Any] = {} if design == "lowrank" else {"residual": True}
    hyper = DESIGNS[design](
        cond_features,
        target.spec,
        hidden=hidden,
        parametrization=parametrization,
        theta0=target.initial_weights(),
        **extra,
        **design_kwargs,
    )
    target.release_initial_weights()  # theta0 holds them: the weights are stored once
    if zero_init:
        hyper.zero_delta_()
    source = next(iter(module.parameters()))
    return HyperModel(target, hyper.to(device=source.device, dtype=source.dtype), conditioner)


def _auto_design(P: int, width: int, max_head_params: int) -> str:
    head = (width + 1) * P
    if head <= max_head_params:
        return "mlp"
    warnings.warn(
        f"hypernetize: an all-at-once head for P = {P:,} generated numbers would have {head:,} parameters "
        f"(> max_head_params = {max_head_params:,}); using design='chunked' instead (pass design= to choose)",
        stacklevel=3,
    )
    return "chunked"
