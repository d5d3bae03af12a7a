"""Empirical NTK of any model, via `torch.func`: Jacobian contraction or NTK-vector products, and
for networks of dense layers a structured contraction that needs no Jacobian (`structured.py`).

`fn(params, x) -> [N, O]` with `params` a dict of tensors (e.g. `functional(model)`), inputs a
Tensor `[N, ...]` or a tuple of them (e.g. `(x, z)` for a `HyperModel`: the kernel with respect to
the hypernetwork's parameters). Output forms: `"full"` `[N1, N2, O, O]`, `"trace"` `[N1, N2]`
(summed over the output diagonal), `"diagonal"` `[N1, N2, O]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from hypernet.kernels.structured import structured_ntk

Inputs = Any  # a Tensor [N, ...] or a tuple of Tensors sharing N
ModelFn = Callable[[dict[str, Tensor], Inputs], Tensor]

OUTPUTS = ("full", "trace", "diagonal")


def functional(model: nn.Module, trainable_only: bool = True) -> tuple[ModelFn, dict[str, Tensor]]:
    """`(fn, params)` for `model`: `fn(params, inputs) = model(*inputs)` with `params` swapped in.

    For a `HyperModel` only the hypernetwork (and conditioner) parameters count: the target's
    generated tensors are placeholders and are left out.
    """
    skip: set[str] = set()
    target = getattr(model, "target", None)
    if target is not None and hasattr(target, "generated_names"):
        skip = {f"target.module.{n}" for n in target.generated_names}
    params = {
        n: p.detach() for n, p in model.named_parameters() if n not in skip and (p.requires_grad or not trainable_only)
    }

    def fn(p: dict[str, Tensor], inputs: Inputs) -> Tensor:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        out: Tensor = functional_call(model, p, args)
        return out

    fn.module = model  # type: ignore[attr-defined]  # lets empirical_ntk use the layer structure
    return fn, params


def _n(inputs: Inputs) -> int:
    return int((inputs[0] if isinstance(inputs, tuple) else inputs).shape[0])


def _reduce(full: Tensor, output: str) -> Tensor:
    if output == "full":
        return full
    if output == "trace":
        return torch.diagonal(full, dim1=-2, dim2=-1).sum(-1)
    return torch.diagonal(full, dim1=-2, dim2=-1)


def _jacobian_ntk(fn: ModelFn, params: dict[str, Tensor], x1: Inputs, x2: Inputs, output: str) -> Tensor:
    def single(p: dict[str, Tensor], xi: Inputs) -> Tensor:
        batched = tuple(t.unsqueeze(0) for t in xi) if isinstance(xi, tuple) else xi.unsqueeze(0)
        return fn(p, batched)[0]

    jac1 = vmap(jacrev(single), in_dims=(None, 0))(params, x1)  # {name: [N1, O, *shape]}
    jac2 = jac1 if x2 is x1 else vmap(jacrev(single), in_dims=(None, 0))(params, x2)
    total: Tensor | None = None
    for name in params:
        a = jac1[name].flatten(2)
        b = jac2[name].flatten(2)
        if output == "full":
            term = torch.einsum("naf,mbf->nmab", a, b)
        elif output == "trace":
            term = torch.einsum("naf,maf->nm", a, b)
        else:
            term = torch.einsum("naf,maf->nma", a, b)
        total = term if total is None else total + term
    assert total is not None
    return total


def _ntvp_ntk(fn: ModelFn, params: dict[str, Tensor], x1: Inputs, x2: Inputs, output: str, chunk: int | None) -> Tensor:
    # Θ = J1 J2ᵀ applied to each basis vector of x2's outputs: a vjp at x2, then a jvp at x1.
    result = vjp(lambda p: fn(p, x2), params)
    out2, vjp_fn = result[0], result[1]
    n2, o = out2.shape

    def column(cotangent: Tensor) -> Tensor:
        (tangent,) = vjp_fn(cotangent)
        return jvp(lambda p: fn(p, x1), (params,), (tangent,))[1]

    if chunk is None:  # bound the batched tangents (chunk x P numbers) to about 2.5e7
        chunk = max(1, int(2.5e7 // max(1, sum(p.numel() for p in params.values()))))
    basis = torch.eye(n2 * o, dtype=out2.dtype, device=out2.device).view(n2 * o, n2, o)
    cols = vmap(column, chunk_size=chunk)(basis)  # [N2*O, N1, O]
    full = cols.view(n2, o, -1, o).permute(2, 0, 3, 1)  # [N1, N2, O(x1), O(x2)]
    return _reduce(full, output)


def empirical_ntk(
    fn: ModelFn,
    params: dict[str, Tensor],
    x1: Inputs,
    x2: Inputs | None = None,
    method: str = "auto",
    output: str = "full",
    chunk: int | None = None,
) -> Tensor:
    """Empirical NTK `Σ_p ∂f(x1)/∂p · ∂f(x2)/∂p` of `fn` at `params`.

    `method`: `"jacobian"` (contract per-sample Jacobians), `"ntvp"` (NTK-vector products, never
    materialising the Jacobians), `"structured"` (dense-layer networks from `functional(model)`:
    activations times back-propagated vectors, no Jacobian), or `"auto"`: structured where it
    applies, else Jacobians while they fit comfortably (their size,
    `(N1 + N2)·O·P` numbers, under 5·10⁷), NTK-vector products beyond. `chunk` bounds how many
    NTK-vector products run at once (default: about 2.5·10⁷ / P).
    """
    if method not in ("auto", "jacobian", "ntvp", "structured"):
        raise ValueError(f"method: expected 'auto', 'jacobian', 'ntvp' or 'structured', got {method!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {list(OUTPUTS)}, got {output!r}")
    x2 = x1 if x2 is None else x2
    module = getattr(fn, "module", None)
    if method in ("auto", "structured"):
        result = structured_ntk(module, params, x1, x2, output) if isinstance(module, nn.Module) else None
        if result is not None:
            return result
        if method == "structured":
            raise ValueError(
                "method='structured' needs `fn` from `functional(model)` with every parameter in a dense layer "
                "used once per forward; use 'jacobian' or 'ntvp'"
            )
    if method == "auto":
        with torch.no_grad():
            o = fn(params, tuple(t[:1] for t in x1) if isinstance(x1, tuple) else x1[:1]).shape[-1]
        P = sum(p.numel() for p in params.values())
        method = "jacobian" if (_n(x1) + _n(x2)) * o * P < 5e7 else "ntvp"
    if method == "jacobian":
        return _jacobian_ntk(fn, params, x1, x2, output)
    return _ntvp_ntk(fn, params, x1, x2, output, chunk)
