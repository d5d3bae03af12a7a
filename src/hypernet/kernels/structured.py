"""Empirical NTK of networks built from dense layers, without any Jacobian: for a dense layer
`y = c_w · W a + c_b · b`, the gradient of one output with respect to `W` for sample `i` is
`c_w · δ_i a_iᵀ` (δ the back-propagated vector at `y`), so

    <∂f_a(x_i)/∂W, ∂f_b(x_j)/∂W> = c_w² (δ_i^a · δ_j^b)(a_i · a_j),   and c_b² (δ_i^a · δ_j^b) for b.

One forward pass and one backward pass per output unit give every layer's `a` and `δ`; the kernel
is then a sum of small `[N, N]` products. Applies when every parameter belongs to an `nn.Linear` or
`NTKLinear` called once per forward on `[N, features]` rows, and samples do not interact (no
BatchNorm in training mode); otherwise `structured_ntk` returns `None` and another method is used.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hypernet.layers import NTKLinear


def _scales(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, NTKLinear):
        return module.weight_var / module.in_features, module.bias_var
    if isinstance(module, nn.Linear):
        return 1.0, 1.0
    return None


def structured_ntk(model: nn.Module, params: dict[str, Tensor], x1: Any, x2: Any, output: str) -> Tensor | None:
    """The empirical NTK (forms as `empirical_ntk`), or `None` where the structure does not apply."""
    modules = dict(model.named_modules())
    layers: dict[str, dict[str, bool]] = {}
    for name in params:
        owner, _, leaf = name.rpartition(".")
        if owner not in modules or _scales(modules[owner]) is None or leaf not in ("weight", "bias"):
            return None
        layers.setdefault(owner, {"weight": False, "bias": False})[leaf] = True
    same = x2 is x1
    first = x1 if isinstance(x1, tuple) else (x1,)
    both = first if same else tuple(torch.cat([a, b]) for a, b in zip(first, x2 if isinstance(x2, tuple) else (x2,)))
    n1 = first[0].shape[0]
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in layers}

    def hook(name: str) -> Any:
        def record(_: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            seen[name].append((inputs[0], out))

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            y = functional_call(model, live, both)
            if y.ndim != 2 or any(len(v) != 1 or v[0][0].ndim != 2 for v in seen.values()):
                return None  # a layer used twice, or on more than one row per sample
            outs = [seen[name][0][1] for name in layers]
            deltas = []  # per output unit: [δ_layer: [N, out_features]]
            for a in range(y.shape[1]):
                deltas.append(torch.autograd.grad(y[:, a].sum(), outs, retain_graph=True, allow_unused=True))
    finally:
        for h in handles:
            h.remove()
    n = y.shape[0]
    n_out = y.shape[1]
    total = torch.zeros(n, n, n_out, n_out, dtype=y.dtype, device=y.device) if output == "full" else None
    trace = torch.zeros(n, n, dtype=y.dtype, device=y.device)
    diag = torch.zeros(n, n, n_out, dtype=y.dtype, device=y.device)
    for k, name in enumerate(layers):
        cw, cb = _scales(modules[name])  # type: ignore[misc]
        act = seen[name][0][0].detach()
        gram = cw * (act @ act.T) if layers[name]["weight"] else torch.zeros(n, n, dtype=y.dtype, device=y.device)
        if layers[name]["bias"]:
            gram = gram + cb
        d = torch.stack(
            [dl[k].detach() if dl[k] is not None else torch.zeros_like(outs[k]) for dl in deltas]
        )  # [O, N, out]
        if output == "full":
            assert total is not None
            total += torch.einsum("aik,bjk->ijab", d, d) * gram[:, :, None, None]
        elif output == "trace":
            trace += torch.einsum("aik,ajk->ij", d, d) * gram
        else:
            diag += torch.einsum("aik,ajk->ija", d, d) * gram[:, :, None]
    result = total if output == "full" else (trace if output == "trace" else diag)
    assert result is not None
    return result if same else result[:n1, n1:]
