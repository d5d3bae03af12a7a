"""Empirical NTK of any model: `empirical_ntk(model, x1, x2)` with an `nn.Module` (or a
`HyperModel`: the kernel with respect to its hypernetwork and conditioner), or
`empirical_ntk(fn, params, x1, x2)` with `fn(params, inputs) -> [N, O]`.

Inputs are a Tensor `[N, ...]` or a tuple of them sharing `N` (e.g. `(x, z)` for a `HyperModel`).
Output forms: `"full"` `[N1, N2, O, O]`, `"trace"` `[N1, N2]` (summed over the output diagonal),
`"diagonal"` `[N1, N2, O]`. Before allocating anything large the call is planned (`NTKPlan`: the
method, blocks of rows, estimated peak memory against `max_memory`); `plan_empirical_ntk` returns
that plan without computing, and `empirical_ntk` logs it (logger `hypernet.kernels`, INFO).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hypernet.kernels import ntk_plan, structured, validate
from hypernet.kernels.autodiff import jacobian_ntk, jacobian_peak, ntvp_ntk, ntvp_peak
from hypernet.kernels.ntk_plan import Inputs, NTKPlan, mib
from hypernet.model import HyperModel

ModelFn = Callable[[dict[str, Tensor], Inputs], Tensor]

OUTPUTS = ("full", "trace", "diagonal")
METHODS = ("auto", "structured", "jacobian", "ntvp")
logger = logging.getLogger("hypernet.kernels")


class ModuleFunction:
    """`fn(params, inputs) = module(*inputs)` with `params` swapped in (`torch.func.functional_call`);
    keeps `module`, so `empirical_ntk` can use its layer structure."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, params: dict[str, Tensor], inputs: Inputs) -> Tensor:
        out: Tensor = functional_call(self.module, params, inputs if isinstance(inputs, tuple) else (inputs,))
        return out


class _HyperFunction(nn.Module):
    """`(x, cond) -> target(x, hypernetwork(condition(x, cond)))` of a `HyperModel`, so that the
    hypernetwork's and conditioner's parameters can be swapped in (the target's generated weights
    are never parameters here: they are the hypernetwork's output)."""

    def __init__(self, model: HyperModel) -> None:
        super().__init__()
        self.hypernetwork, self.conditioner, self.target = model.hypernetwork, model.conditioner, model.target
        object.__setattr__(self, "model", model)  # not a submodule: its parameters are listed above

    def forward(self, x: Any, cond: Any = None) -> Tensor:
        m: HyperModel = object.__getattribute__(self, "model")
        out: Tensor = m.target(x, m.hypernetwork(m.condition(x, cond)))
        return out


def functional(model: nn.Module, trainable_only: bool = True) -> tuple[ModelFn, dict[str, Tensor]]:
    """`(fn, params)` for `model`: `fn(params, inputs) = model(*inputs)` with `params` swapped in.

    For a `HyperModel` only the hypernetwork and conditioner parameters count (names
    `hypernetwork.*`, `conditioner.*`); the target's weights are what the hypernetwork generates.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    module: nn.Module = _HyperFunction(model) if isinstance(model, HyperModel) else model
    prefixes = ("hypernetwork.", "conditioner.") if isinstance(model, HyperModel) else ("",)
    params = {
        n: p.detach()
        for n, p in module.named_parameters()
        if n.startswith(prefixes) and (p.requires_grad or not trainable_only)
    }
    return ModuleFunction(module), params


def _module_of(fn: ModelFn) -> nn.Module | None:
    """The module behind `fn` (from `functional`, or any function with a `module` attribute)."""
    module = getattr(fn, "module", None)
    return module if isinstance(module, nn.Module) else None


def _check_inputs(name: str, x: Any) -> tuple[Tensor, ...]:
    ts = x if isinstance(x, tuple) else (x,)
    if not ts or not all(isinstance(t, Tensor) for t in ts):
        raise TypeError(f"{name}: expected a Tensor [N, ...] or a tuple of Tensors sharing N")
    shapes = [list(t.shape) for t in ts]
    if any(t.ndim < 1 for t in ts) or len({t.shape[0] for t in ts}) != 1:
        raise ValueError(f"{name}: every tensor needs the same leading N rows, got shapes {shapes}")
    if ts[0].shape[0] < 1:
        raise ValueError(f"{name}: needs at least one row, got shapes {shapes}")
    for t in ts:
        validate.finite(name, t)
    return ts


def _resolve(f: Any, args: tuple[Any, ...], x2: Any) -> tuple[ModelFn, dict[str, Tensor], Inputs, Inputs | None]:
    """`(fn, params, x1, x2)` from either call form, every argument checked."""
    if isinstance(f, nn.Module):
        if not 1 <= len(args) <= 2:
            raise TypeError(
                f"empirical_ntk(model, x1, x2=None): expected 1 or 2 inputs after the model, got {len(args)}"
            )
        fn, params = functional(f)
        x1, given = args[0], args[1] if len(args) == 2 else None
    elif callable(f):
        if not 2 <= len(args) <= 3:
            raise TypeError(
                f"empirical_ntk(fn, params, x1, x2=None): expected params and 1 or 2 inputs, got {len(args)}"
            )
        fn, params, x1, given = f, args[0], args[1], args[2] if len(args) == 3 else None
        if not isinstance(params, dict) or not all(isinstance(v, Tensor) for v in params.values()):
            raise TypeError(f"params: expected a dict of name -> Tensor, got {type(params).__name__}")
    else:
        raise TypeError(f"f: expected an nn.Module or a function fn(params, inputs), got {type(f).__name__}")
    if given is not None and x2 is not None:
        raise TypeError("x2: given both positionally and by keyword")
    x2 = given if given is not None else x2
    if not params:
        raise ValueError("params: no (trainable) parameters to differentiate with respect to")
    a = _check_inputs("x1", x1)
    if x2 is x1:
        x2 = None  # the same points: a symmetric kernel, computed once per pair of blocks
    if x2 is not None:
        b = _check_inputs("x2", x2)
        if len(b) != len(a) or any(u.shape[1:] != v.shape[1:] for u, v in zip(a, b)):
            raise ValueError(
                f"x2: expected the structure of x1 {[['N', *t.shape[1:]] for t in a]}, got {[list(t.shape) for t in b]}"
            )
    return fn, params, x1, x2


def _too_big(method: str, budget: int, one: int, full: int, result: int, shape: tuple[int, ...]) -> ValueError:
    hint = "" if len(shape) == 2 else ", or output='trace'"
    what = "the result alone does not fit" if result > budget else "not even one block fits"
    return ValueError(
        f"max_memory: {mib(budget)} is too small for the {method!r} empirical NTK ({what}): estimated peak "
        f"{mib(one)} with 1x1-row blocks ({mib(result)} is the result {list(shape)} itself; {mib(full)} unblocked). "
        f"Raise max_memory or use fewer points{hint}"
    )


def _plan(
    fn: ModelFn,
    params: dict[str, Tensor],
    x1: Inputs,
    x2: Inputs | None,
    method: str,
    output: str,
    chunk: int | None,
    max_memory: int | None,
) -> tuple[NTKPlan, dict[str, structured.Layer] | None, ntk_plan.Probe]:
    validate.choice("method", method, METHODS)
    validate.choice("output", output, OUTPUTS)
    validate.optional_count("chunk", chunk, 1)
    validate.optional_count("max_memory", max_memory, 1)
    probe = ntk_plan.probe(fn, params, x1)
    n1 = ntk_plan.n_rows(x1)
    n2 = n1 if x2 is None else ntk_plan.n_rows(x2)
    shape = ntk_plan.result_shape(n1, n2, probe.n_outputs, output)
    result = probe.itemsize * n1 * n2 * ntk_plan.per_pair(probe.n_outputs, output)
    budget = max_memory if max_memory is not None else ntk_plan.default_budget(probe.device)
    n_params = sum(p.numel() for p in params.values())

    def plan(name: str, reason: str, block: tuple[int, int], products: int | None, peak: int) -> NTKPlan:
        return NTKPlan(name, reason, output, shape, n_params, block, products, peak, budget)

    why_not = "requested"
    if method in ("auto", "structured"):
        module = _module_of(fn)
        layers: dict[str, structured.Layer] | str
        if not isinstance(module, nn.Module):
            layers = "fn is a plain function (pass the nn.Module itself, or fn from kernels.functional(model))"
        else:
            layers = structured.eligible(module, params)
            if isinstance(layers, dict):
                layers = structured.check(module, params, layers, x1) or layers
        if isinstance(layers, dict):
            peak = lambda r, c: structured.peak(probe, layers, output, n1, n2, r, c)  # noqa: E731
            block = ntk_plan.fit_square(n1, n2, peak, budget)
            if block is None:
                raise _too_big("structured", budget, peak(1, 1), peak(n1, n2), result, shape)
            return plan("structured", "every parameter in a dense layer", block, None, peak(*block)), layers, probe
        if method == "structured":
            raise ValueError(
                "method='structured' needs an nn.Module (or fn from functional(model)) with every parameter in a "
                f"dense layer used once per forward ({layers}); use 'jacobian' or 'ntvp'"
            )
        why_not = f"no structured path: {layers}"
        if module is None:
            warnings.warn(
                "empirical_ntk: `fn` is a plain function, so the structured path cannot be used; for networks of "
                "dense layers passing the nn.Module itself (empirical_ntk(model, x1, x2)) is often 100x+ faster",
                stacklevel=3,
            )
    jac_peak = lambda r, c: jacobian_peak(probe, n_params, output, n1, n2, r, c)  # noqa: E731
    if method == "auto":
        fits = jac_peak(n1, n2) <= budget and (n1 + n2) * probe.n_outputs * n_params < 5e7
        method = "jacobian" if fits else "ntvp"
        why_not += "; the Jacobians fit in one block" if fits else "; the Jacobians are large: NTK-vector products"
    if method == "jacobian":
        block = ntk_plan.fit_square(n1, n2, jac_peak, budget)
        if block is None:
            raise _too_big("jacobian", budget, jac_peak(1, 1), jac_peak(n1, n2), result, shape)
        return plan("jacobian", why_not, block, None, jac_peak(*block)), None, probe
    k_of = lambda r, c: chunk or _most_products(probe, n_params, output, n1, n2, r, c, budget)  # noqa: E731
    peak3 = lambda r, c: ntvp_peak(probe, n_params, output, n1, n2, r, c, k_of(r, c))  # noqa: E731
    block = ntk_plan.fit_square(n1, n2, peak3, budget)
    if block is None:
        raise _too_big("ntvp", budget, peak3(1, 1), peak3(n1, n2), result, shape)
    return plan("ntvp", why_not, block, k_of(*block), peak3(*block)), None, probe


def _most_products(
    probe: ntk_plan.Probe, n_params: int, output: str, n1: int, n2: int, r: int, c: int, budget: int
) -> int:
    """How many NTK-vector products run at once: as many as the budget allows, at least 1, and at
    most as many as keep their columns `[k, r, O]` within `r x c` numbers (`"trace"`/`"diagonal"`:
    no `[N, N, O]` temporary) or the result block `[r, c, O, O]` (`"full"`)."""
    base = ntvp_peak(probe, n_params, output, n1, n2, r, c, 0)
    per = max(1, ntvp_peak(probe, n_params, output, n1, n2, r, c, 1) - base)
    cap = max(1, c * probe.n_outputs if output == "full" else c // probe.n_outputs)
    return int(min(cap, max(1, (budget - base) // per)))


@overload
def empirical_ntk(
    f: nn.Module,
    x1: Inputs,
    /,
    x2: Inputs | None = None,
    *,
    method: str = "auto",
    output: str = "full",
    chunk: int | None = None,
    max_memory: int | None = None,
) -> Tensor: ...


@overload
def empirical_ntk(
    f: ModelFn,
    params: dict[str, Tensor],
    x1: Inputs,
    /,
    x2: Inputs | None = None,
    *,
    method: str = "auto",
    output: str = "full",
    chunk: int | None = None,
    max_memory: int | None = None,
) -> Tensor: ...


def empirical_ntk(
    f: nn.Module | ModelFn,
    *args: Any,
    x2: Inputs | None = None,
    method: str = "auto",
    output: str = "full",
    chunk: int | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Empirical NTK `Σ_p ∂f(x1)/∂p · ∂f(x2)/∂p`: `empirical_ntk(model, x1, x2=None)` or
    `empirical_ntk(fn, params, x1, x2=None)`. Shapes: `x1: [N1, ...]`, `x2: [N2, ...]` (default `x1`).

    `method`: `"structured"` (dense-layer networks: activations times back-propagated vectors, no
    Jacobian), `"jacobian"` (contract per-sample Jacobians), `"ntvp"` (NTK-vector products, never
    materialising a Jacobian), or `"auto"`: structured wherever every parameter sits in a dense
    layer, else Jacobians when they fit in one block, else NTK-vector products. The work runs in
    blocks of rows sized so that the estimated peak stays under `max_memory` bytes (default: a
    quarter of the RAM, half of a GPU's free memory); if even one block cannot fit, a `ValueError`
    gives the estimate. `chunk`: NTK-vector products at once (default: as many as fit). The plan
    taken is logged at INFO (`plan_empirical_ntk` returns it).
    """
    fn, params, a, b = _resolve(f, args, x2)
    plan, layers, probe = _plan(fn, params, a, b, method, output, chunk, max_memory)
    logger.info("empirical_ntk: %s", plan)
    out = torch.empty(plan.shape, dtype=probe.dtype, device=probe.device)
    if plan.method == "structured":
        assert layers is not None
        return structured.structured_ntk(_module_of(fn), params, layers, a, b, output, plan.block, out)  # type: ignore[arg-type]
    if plan.method == "jacobian":
        return jacobian_ntk(fn, params, a, b, output, plan.block, out)
    assert plan.products is not None
    return ntvp_ntk(fn, params, a, b, output, plan.block, plan.products, out)


def plan_empirical_ntk(
    f: nn.Module | ModelFn,
    *args: Any,
    x2: Inputs | None = None,
    method: str = "auto",
    output: str = "full",
    chunk: int | None = None,
    max_memory: int | None = None,
) -> NTKPlan:
    """The `NTKPlan` that `empirical_ntk` with the same arguments runs (method, blocks, estimated
    peak memory), after a probe on two rows; nothing of the kernel's size is allocated."""
    fn, params, a, b = _resolve(f, args, x2)
    return _plan(fn, params, a, b, method, output, chunk, max_memory)[0]
