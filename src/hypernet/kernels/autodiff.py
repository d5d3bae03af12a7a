"""Empirical NTK of any function by automatic differentiation, block by block: contracting
per-sample Jacobians (`"jacobian"`), or NTK-vector products (`"ntvp"`: a vjp at `x2` then a jvp at
`x1` per basis vector, never materialising a Jacobian). Both fill only the `N1 x N2` blocks asked
for; `"trace"`/`"diagonal"` are reduced per block (Jacobians) or per group of products (ntvp)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vjp, vmap

from hypernet.kernels.ntk_plan import Inputs, Probe, blocks, mirror, n_rows, per_pair, rows

ModelFn = Callable[[dict[str, Tensor], Inputs], Tensor]


def jacobian_peak(probe: Probe, n_params: int, output: str, n1: int, n2: int, r: int, c: int) -> int:
    """Estimated peak bytes, blocks of `r` x `c` rows: per row its Jacobian `[O, P]` and the
    backward graph of `O` vmapped gradients (twice: values and temporaries); per pair one result-
    sized contraction temporary."""
    o, item = probe.n_outputs, probe.itemsize
    row = 2 * o * (item * n_params + probe.row_bytes)
    result = item * n1 * n2 * per_pair(o, output)
    return result + 2 * o * probe.fixed_bytes + probe.param_bytes + (r + c) * row + r * c * item * per_pair(o, output)


def ntvp_peak(probe: Probe, n_params: int, output: str, n1: int, n2: int, r: int, c: int, k: int) -> int:
    """Estimated peak bytes, blocks of `r` x `c` rows with `k` products at once: the vjp graph at
    the `c` rows, and per product a tangent `[P]` (twice: the vjp result and the jvp's), the vjp's
    and jvp's activations for `c` and `r` rows, and its column `[r, O]`."""
    o, item = probe.n_outputs, probe.itemsize
    result = item * n1 * n2 * per_pair(o, output)
    per_product = 2 * item * n_params + (r + c) * probe.row_bytes + 2 * item * r * o + 2 * probe.fixed_bytes
    return result + probe.param_bytes + probe.fixed_bytes + c * probe.row_bytes + k * per_product


def _single(fn: ModelFn) -> Callable[[dict[str, Tensor], Inputs], Tensor]:
    def single(p: dict[str, Tensor], xi: Inputs) -> Tensor:
        batched = tuple(t.unsqueeze(0) for t in xi) if isinstance(xi, tuple) else xi.unsqueeze(0)
        return fn(p, batched)[0]

    return single


def jacobian_ntk(
    fn: ModelFn,
    params: dict[str, Tensor],
    x1: Inputs,
    x2: Inputs | None,
    output: str,
    block: tuple[int, int],
    out: Tensor,
) -> Tensor:
    """Fill `out` by contracting per-sample Jacobians, `block` rows of `x1` / `x2` at a time."""
    jac = vmap(jacrev(_single(fn)), in_dims=(None, 0))  # {name: [rows, O, *shape]}
    symmetric = x2 is None
    xb = x1 if x2 is None else x2
    cached: tuple[slice, dict[str, Tensor]] | None = None
    for i, j in blocks(n_rows(x1), n_rows(xb), block[0], block[1], symmetric):
        if cached is None or cached[0] != i:
            cached = (i, jac(params, rows(x1, i)))
        jac1 = cached[1]
        jac2 = jac1 if symmetric and i == j else jac(params, rows(xb, j))
        target = out[i, j]
        target.zero_()
        for name in params:
            a, b = jac1[name].flatten(2), jac2[name].flatten(2)
            if output == "full":
                target += torch.einsum("naf,mbf->nmab", a, b)
            elif output == "trace":  # contracts over (a, f) at once: a matrix product, no [n, m, O]
                target += torch.einsum("naf,maf->nm", a, b)
            else:  # batched over a: [O, n, m], the block's own size
                target += torch.einsum("naf,maf->nma", a, b)
        del jac2
        if symmetric:
            mirror(out, i, j, output)
    return out


def ntvp_ntk(
    fn: ModelFn,
    params: dict[str, Tensor],
    x1: Inputs,
    x2: Inputs | None,
    output: str,
    block: tuple[int, int],
    products: int,
    out: Tensor,
) -> Tensor:
    """Fill `out` by NTK-vector products: per block, a vjp at the `x2` rows, then for each basis
    vector of their outputs (`products` at a time) a jvp at the `x1` rows gives one column
    `Θ[i_rows, j, :, b]`; `"trace"`/`"diagonal"` keep only its entry `b` before the next group."""
    symmetric = x2 is None
    xb = x1 if x2 is None else x2
    for i, j in blocks(n_rows(x1), n_rows(xb), block[0], block[1], symmetric):
        xi, xj = rows(x1, i), rows(xb, j)
        out2, vjp_fn = vjp(lambda p, xj=xj: fn(p, xj), params)[:2]
        c, o = out2.shape

        def column(
            cotangent: Tensor, vjp_fn: Callable[..., tuple[dict[str, Tensor]]] = vjp_fn, xi: Inputs = xi
        ) -> Tensor:
            (tangent,) = vjp_fn(cotangent)
            return jvp(lambda p: fn(p, xi), (params,), (tangent,))[1]

        target = out[i, j]  # [r, c, ...]
        if output == "trace":
            target.zero_()
        for q0 in range(0, c * o, products):
            q = torch.arange(q0, min(c * o, q0 + products), device=out2.device)
            basis = torch.zeros(len(q), c, o, dtype=out2.dtype, device=out2.device)
            k = torch.arange(len(q), device=out2.device)  # not the default device: it indexes out2's
            basis[k, q // o, q % o] = 1
            cols = vmap(column)(basis)  # [k, r, O]: Θ[i_rows, j0, :, b] for (j0, b) = divmod(q, O)
            j0, b = q // o, q % o
            if output == "full":
                target[:, j0, :, b] = cols  # split advanced indices put k first: [k, r, O]
            else:
                picked = cols[k, :, b]  # [k, r]
                if output == "diagonal":
                    target[:, j0, b] = picked.T
                else:
                    target.index_add_(1, j0, picked.T)
            del cols, basis
        if symmetric:
            mirror(out, i, j, output)
    return out
