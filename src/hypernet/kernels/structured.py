"""Empirical NTK of networks built from dense layers, without any Jacobian: for a dense layer
`y = c_w · W a + c_b · b`, the gradient of one output with respect to `W` for sample `i` is
`c_w · δ_i a_iᵀ` (δ the back-propagated vector at `y`), so

    <∂f_a(x_i)/∂W, ∂f_b(x_j)/∂W> = c_w² (δ_i^a · δ_j^b)(a_i · a_j),   and c_b² (δ_i^a · δ_j^b) for b.

One forward pass and one backward pass per output unit give every layer's `a` and `δ`; the kernel
is then a sum of small `[N1, N2]` products. For `"trace"` and `"diagonal"` the output units are
visited one at a time, so nothing of size `O x` a block is ever held besides the result itself;
`"full"` keeps every unit's `δ` of a block. Applies when every parameter belongs to an `nn.Linear`
or `NTKLinear` called once per forward on `[N, features]` rows, and samples do not interact (no
BatchNorm in training mode); `eligible` says why not otherwise, and another method is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hypernet.kernels.ntk_plan import Inputs, Probe, blocks, mirror, n_rows, per_pair, rows
from hypernet.layers import NTKLinear


@dataclass(frozen=True)
class Layer:
    """A dense layer owning parameters: which of `weight`/`bias` count, and their scales `c_w`, `c_b`."""

    weight: bool
    bias: bool
    cw: float
    cb: float
    in_features: int
    out_features: int


def _scales(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, NTKLinear):
        return module.weight_var / module.in_features, module.bias_var
    if isinstance(module, nn.Linear):
        return 1.0, 1.0
    return None


def eligible(model: nn.Module, params: dict[str, Tensor]) -> dict[str, Layer] | str:
    """The dense layers owning `params`, or the reason the structure does not apply."""
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return f"{name} is a BatchNorm in training mode (samples interact)"
    found: dict[str, dict[str, bool]] = {}
    for name in params:
        owner, _, leaf = name.rpartition(".")
        if owner not in modules or _scales(modules[owner]) is None or leaf not in ("weight", "bias"):
            return f"parameter {name} is not the weight or bias of an nn.Linear/NTKLinear"
        found.setdefault(owner, {"weight": False, "bias": False})[leaf] = True
    layers = {}
    for owner, has in found.items():
        m = modules[owner]
        cw, cb = _scales(m)  # type: ignore[misc]
        layers[owner] = Layer(has["weight"], has["bias"], cw, cb, int(m.in_features), int(m.out_features))
    return layers


@dataclass
class _Pass:
    """One forward pass on a block of rows: outputs `y: [n, O]`, each layer's input `a: [n, in]`
    and output (the tensor δ is taken at)."""

    y: Tensor
    acts: list[Tensor]
    outs: list[Tensor]

    def deltas(self, unit: int) -> tuple[Tensor | None, ...]:
        """δ of output unit `unit` at every layer: `[n, out_features]` each (None: unused)."""
        return torch.autograd.grad(self.y[:, unit].sum(), self.outs, retain_graph=True, allow_unused=True)


def _forward(model: nn.Module, params: dict[str, Tensor], layers: dict[str, Layer], x: Inputs) -> _Pass | str:
    modules = dict(model.named_modules())
    seen: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in layers}

    def hook(name: str) -> Any:
        def record(_: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            seen[name].append((inputs[0], out))

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            y = functional_call(model, live, x if isinstance(x, tuple) else (x,))
    finally:
        for h in handles:
            h.remove()
    n = n_rows(x)
    if not isinstance(y, Tensor) or y.ndim != 2 or y.shape[0] != n:
        return f"the output is not [N, O] (got {list(getattr(y, 'shape', []))})"
    for name, calls in seen.items():
        if len(calls) != 1 or calls[0][0].ndim != 2 or calls[0][0].shape[0] != n:
            return f"layer {name} is not called once on [N, features] rows"
    return _Pass(y, [seen[name][0][0].detach() for name in layers], [seen[name][0][1] for name in layers])


def check(model: nn.Module, params: dict[str, Tensor], layers: dict[str, Layer], x: Inputs) -> str | None:
    """`None` when the structure holds on the first two rows of `x`, else the reason it does not."""
    result = _forward(model, params, layers, rows(x, slice(0, 2)))
    return result if isinstance(result, str) else None


def peak(probe: Probe, layers: dict[str, Layer], output: str, n1: int, n2: int, r: int, c: int) -> int:
    """Estimated peak bytes for blocks of `r` x `c` rows (result `[n1, n2, ...]` included).

    Per row of a block: its forward graph (`probe.row_bytes`), and δ of one output unit at every
    layer twice (the gradient and its temporaries), times O for `"full"` (all units kept). Per
    (row, row) pair: each layer's Gram matrix, plus two products (result-sized for the block).
    """
    o, item = probe.n_outputs, probe.itemsize
    width = sum(ly.in_features + ly.out_features for ly in layers.values())
    keep = o if output == "full" else 1
    row = probe.row_bytes + item * (width + 2 * keep * sum(ly.out_features for ly in layers.values()))
    pair = item * (len(layers) + 2 * per_pair(o, output))
    result = item * n1 * n2 * per_pair(o, output)
    return result + 2 * (probe.fixed_bytes + probe.param_bytes) + (r + c) * row + r * c * pair


def structured_ntk(
    model: nn.Module,
    params: dict[str, Tensor],
    layers: dict[str, Layer],
    x1: Inputs,
    x2: Inputs | None,
    output: str,
    block: tuple[int, int],
    out: Tensor,
) -> Tensor:
    """Fill `out` (`[N1, N2, ...]` per `output`) with the empirical NTK, block by block."""
    symmetric = x2 is None
    xb = x1 if x2 is None else x2
    info = list(layers.values())
    for i, j in blocks(n_rows(x1), n_rows(xb), block[0], block[1], symmetric):
        fa = _forward(model, params, layers, rows(x1, i))
        same = symmetric and i == j
        fb = fa if same else _forward(model, params, layers, rows(xb, j))
        if isinstance(fa, str) or isinstance(fb, str):  # the probe passed, so this is a data-dependent change
            raise RuntimeError(f"structured empirical NTK: {fa if isinstance(fa, str) else fb}")
        grams = []
        for ly, a_a, a_b in zip(info, fa.acts, fb.acts):
            g = torch.mm(a_a, a_b.T).mul_(ly.cw) if ly.weight else a_a.new_zeros(a_a.shape[0], a_b.shape[0])
            grams.append(g.add_(ly.cb) if ly.bias else g)
        _block(fa, fb, same, grams, output, out[i, j])
        if symmetric:
            mirror(out, i, j, output)
        del fa, fb, grams
    return out


def _block(fa: _Pass, fb: _Pass, same: bool, grams: list[Tensor], output: str, target: Tensor) -> None:
    n_out = fa.y.shape[1]
    if output == "full":  # every unit's δ for the block: [O, rows, out_features] per layer
        da = [fa.deltas(a) for a in range(n_out)]
        db = da if same else [fb.deltas(b) for b in range(n_out)]
        target.zero_()
        for k, g in enumerate(grams):
            if da[0][k] is None:
                continue  # the layer does not reach the output
            sa = torch.stack([d[k] for d in da])  # type: ignore[misc]
            sb = torch.stack([d[k] for d in db])  # type: ignore[misc]
            target += torch.einsum("aik,bjk->ijab", sa, sb).mul_(g[:, :, None, None])
        return
    if output == "trace":
        target.zero_()
    for a in range(n_out):  # one unit at a time: nothing O times a block is held
        d1 = fa.deltas(a)
        d2 = d1 if same else fb.deltas(a)
        acc = target if output == "trace" else torch.zeros_like(grams[0])
        for u, v, g in zip(d1, d2, grams):
            if u is not None and v is not None:
                acc.add_(torch.mm(u, v.T).mul_(g))
        if output == "diagonal":
            target[:, :, a] = acc
