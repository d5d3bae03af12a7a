"""The GP kernel and NTK ("hyperkernel") of a hypernetwork in the dually infinite limit.

Notation (fixed across the API): `z` is the hypernetwork's input and `x` the primary network's
(the paper writes `h(x, z) = g(z; f(x))` with the letters the other way round). The model is
`h(x, z) = g(x; f(z))`: `f` an MLP of `f_depth` hidden layers whose output is every weight and bias
of `g`, an MLP of `g_depth` hidden layers with a scalar readout; only `f` is trained. Both in NTK
parametrization. With `Σ_f`, `Θ_f` the NNGP and NTK of `f` per output unit (docs/theory.md):

    GP kernel:   K_h = K^{L+1}(x, x')    (g's NNGP recursion, every layer times Σ_f(z, z'))
    hyperkernel: Θ_h = Θ_f(z, z') · T^{L+1}(x, x')

The same `mlp_recursion` serves the MLP and the hypernetwork: only the `rho` factor differs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hypernet.kernels import validate
from hypernet.kernels.activations import ActivationRule, get_rule
from hypernet.kernels.analytic import Kernel, Rho, _prepare, mlp_recursion, nngp_diagonal, row_blocks


def hyper_kernel(
    x1: Tensor,
    z1: Tensor,
    x2: Tensor | None = None,
    z2: Tensor | None = None,
    f_depth: int = 1,
    g_depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    variant: str = "exact",
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Kernel:
    """Both hypernetwork kernels for pairs `(x1[i], z1[i])` against `(x2[j], z2[j])`.

    Shapes: `x1: [N1, d]`, `z1: [N1, d_z]`, `x2: [N2, d]`, `z2: [N2, d_z]` (defaults: the first set).
    `variant="exact"` implements docs/theory.md; `"released"` reproduces the official code's
    simplification (correlation instead of covariance, fewer `Σ_f` factors), for comparison.
    """
    validate.choice("variant", variant, ("exact", "released"))
    validate.count("f_depth", f_depth, 0)
    validate.mlp_arguments(g_depth, weight_var, bias_var, block, depth_name="g_depth")
    get_rule(activation)
    if (x2 is None) != (z2 is None):
        raise ValueError("x2, z2: pass both (a second set of pairs) or neither (the first set against itself)")
    xa, xb = _prepare(x1, x2, dtype)
    za, zb = _prepare(z1, z2, dtype, ("z1", "z2"))
    if za.shape[0] != xa.shape[0] or zb.shape[0] != xb.shape[0]:
        raise ValueError(
            f"z1/z2: need one z per x, got x1 {list(xa.shape)} with z1 {list(za.shape)}, "
            f"x2 {list(xb.shape)} with z2 {list(zb.shape)}"
        )
    sf1 = nngp_diagonal(za, f_depth, weight_var, bias_var, activation)
    sf2 = nngp_diagonal(zb, f_depth, weight_var, bias_var, activation)
    nngp = torch.empty(xa.shape[0], xb.shape[0], dtype=dtype, device=xa.device)
    ntk = torch.empty_like(nngp)
    d1 = torch.empty(xa.shape[0], dtype=dtype, device=xa.device)
    # x1 without rows: one empty block still runs g's recursion, which gives x2's diagonal
    for r in list(row_blocks(xa.shape[0], xb.shape[0], block)) or [slice(0, 0)]:
        same = r.start if x2 is None and z2 is None else None
        f = mlp_recursion(za[r], zb, f_depth, weight_var, bias_var, activation, same_offset=same)
        rho = Rho(f.nngp, sf1[r], sf2)
        g = mlp_recursion(xa[r], xb, g_depth, weight_var, bias_var, activation, rho, variant == "released", same)
        nngp[r], ntk[r], d1[r] = g.nngp, f.ntk * g.ntk, g.diag1
    return Kernel(nngp, ntk, d1, g.diag2)


def hyper_nngp(
    x1: Tensor,
    z1: Tensor,
    x2: Tensor | None = None,
    z2: Tensor | None = None,
    f_depth: int = 1,
    g_depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    variant: str = "exact",
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Tensor:
    """The dually infinite GP kernel `[N1, N2]` of `h(x, z) = g(x; f(z))`."""
    return hyper_kernel(
        x1, z1, x2, z2, f_depth, g_depth, weight_var, bias_var, activation, variant=variant, dtype=dtype, block=block
    ).nngp


def hyper_ntk(
    x1: Tensor,
    z1: Tensor,
    x2: Tensor | None = None,
    z2: Tensor | None = None,
    f_depth: int = 1,
    g_depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    variant: str = "exact",
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Tensor:
    """The hyperkernel `[N1, N2]`: the NTK of `h(x, z) = g(x; f(z))` with respect to `f`'s parameters."""
    return hyper_kernel(
        x1, z1, x2, z2, f_depth, g_depth, weight_var, bias_var, activation, variant=variant, dtype=dtype, block=block
    ).ntk
