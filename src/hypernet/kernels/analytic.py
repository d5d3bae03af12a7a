"""Analytic NNGP and NTK of an MLP in NTK parametrization, and the `MLPDescription` that gives both
the finite module and its kernels.

Convention (neural-tangents' `stax.Dense(W_std=sqrt(weight_var), b_std=sqrt(bias_var))`): every dense
layer computes `sqrt(weight_var / fan_in) · W h + sqrt(bias_var) · b` with `W, b ~ N(0, 1)`; `depth`
hidden layers, then a linear readout. The recursion optionally carries a factor `rho` (the
hypernetwork's output covariance `Σ_f`, see `hypernet.kernels.hyper`); `rho ≡ 1` is the plain MLP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hypernet.activations import make_activation
from hypernet.kernels import validate
from hypernet.kernels.activations import ActivationRule, get_rule
from hypernet.layers import NTKLinear


@dataclass(frozen=True)
class Kernel:
    """An immutable kernel record: `nngp`, `ntk: [N1, N2]`, and the NNGP diagonals `diag1: [N1]`, `diag2: [N2]`."""

    nngp: Tensor
    ntk: Tensor
    diag1: Tensor
    diag2: Tensor


@dataclass(frozen=True)
class Rho:
    """The `Σ_f` factors multiplying each layer's covariance: `cross: [N1, N2]`, diagonals `d1`, `d2`."""

    cross: Tensor
    d1: Tensor
    d2: Tensor


def mlp_recursion(
    x1: Tensor,
    x2: Tensor,
    depth: int,
    weight_var: float,
    bias_var: float,
    activation: str | ActivationRule,
    rho: Rho | None = None,
    released: bool = False,
    same_offset: int | None = None,
) -> Kernel:
    """NNGP `K^{L+1}` and the backward product `T^{L+1}` of `depth` hidden layers plus readout.

    With `rho`, every layer's covariance is multiplied by `Σ_f` (docs/theory.md). `released=True`
    follows the official hyperkernel code instead: the correlation `ρ/sqrt(ρ₁ρ₂)` in the forward
    layers and no `Σ_f` factor in the readout nor in the backward products. `same_offset=s` says
    that `x1[i]` is `x2[s + i]` (a row block of a symmetric kernel): those entries are then
    computed by the exact identical-input rule.
    """
    rule = get_rule(activation)
    d = x1.shape[1]
    if rho is not None and released:
        corr = rho.cross / torch.sqrt(rho.d1[:, None] * rho.d2[None, :])
        one1, one2 = torch.ones_like(rho.d1), torch.ones_like(rho.d2)
        rho = Rho(corr, one1, one2)
    rows = torch.arange(x1.shape[0], device=x1.device)
    cols = rows + same_offset if same_offset is not None else None
    lin = (x1 @ x2.T).mul_(weight_var / d).add_(bias_var)
    lin1 = weight_var * (x1 * x1).sum(1) / d + bias_var
    lin2 = weight_var * (x2 * x2).sum(1) / d + bias_var
    if cols is not None:
        lin[rows, cols] = lin1
    k, k1, k2 = (lin, lin1, lin2) if rho is None else (rho.cross * lin, rho.d1 * lin1, rho.d2 * lin2)
    t = lin
    for layer in range(depth):
        e, e_dot, e1, e2 = rule.kernel(k1, k2, k)
        if cols is not None:
            e[rows, cols], e_dot[rows, cols] = rule.diag(k1)
        last = layer == depth - 1
        base = e.mul_(weight_var).add_(bias_var)
        base1, base2 = weight_var * e1 + bias_var, weight_var * e2 + bias_var
        backward = e_dot.mul_(weight_var).mul_(t)
        if rho is not None and not released:
            backward.mul_(rho.cross)
        t = backward.add_(base)
        if rho is None or (released and last):
            k, k1, k2 = base, base1, base2
        else:
            k, k1, k2 = rho.cross * base, rho.d1 * base1, rho.d2 * base2
    return Kernel(nngp=k, ntk=t, diag1=k1, diag2=k2)


def row_blocks(n1: int, n2: int, block: int | None) -> Iterator[slice]:
    """Row slices of an `[n1, n2]` kernel. By default about 8 MB of float64 per block temporary:
    small blocks keep memory bounded (N = 10,000 fits) and are faster too, since the allocator
    reuses them, while every fresh 64 MB temporary costs more in page faults than its arithmetic."""
    step = block if block is not None else max(16, (1 << 20) // max(1, n2))
    for start in range(0, n1, step):
        yield slice(start, min(n1, start + step))


def _prepare(
    x1: Tensor, x2: Tensor | None, dtype: torch.dtype, names: tuple[str, str] = ("x1", "x2")
) -> tuple[Tensor, Tensor]:
    """`x1`, `x2` (default `x1`) checked (finite, `[N, d]`, `d >= 1`, matching `d`) and cast to `dtype`."""
    validate.float_dtype("dtype", dtype)
    validate.matrix(names[0], x1, "N1", "d")
    if x2 is None:
        x2 = x1
    else:
        validate.matrix(names[1], x2, "N2", "d")
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(f"{names[1]}: expected [N2, {x1.shape[1]}], got {list(x2.shape)}")
    return x1.to(dtype), x2.to(dtype=dtype, device=x1.device)


def _same(x2: Tensor | None, rows: slice) -> int | None:
    """Row block `rows` of a symmetric kernel (`x2` not given) starts at column `rows.start`."""
    return rows.start if x2 is None else None


def _check(depth: int, weight_var: float, bias_var: float, activation: str | ActivationRule, block: int | None) -> None:
    validate.mlp_arguments(depth, weight_var, bias_var, block)
    get_rule(activation)  # an unknown name fails here, before any work, naming `activation`


def mlp_kernel(
    x1: Tensor,
    x2: Tensor | None = None,
    depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Kernel:
    """Both kernels of the MLP in one pass (shared work): `x1: [N1, d]`, `x2: [N2, d]` (default `x1`)."""
    _check(depth, weight_var, bias_var, activation, block)
    a, b = _prepare(x1, x2, dtype)
    nngp = torch.empty(a.shape[0], b.shape[0], dtype=dtype, device=a.device)
    ntk = torch.empty_like(nngp)
    for r in row_blocks(a.shape[0], b.shape[0], block):
        kern = mlp_recursion(a[r], b, depth, weight_var, bias_var, activation, same_offset=_same(x2, r))
        nngp[r], ntk[r] = kern.nngp, kern.ntk
    d1 = nngp_diagonal(a, depth, weight_var, bias_var, activation)
    d2 = nngp_diagonal(b, depth, weight_var, bias_var, activation)
    return Kernel(nngp, ntk, d1, d2)


def nngp_diagonal(
    x: Tensor, depth: int, weight_var: float = 2.0, bias_var: float = 0.0, activation: str | ActivationRule = "relu"
) -> Tensor:
    """`K(x_i, x_i)`: `[N]`, in O(N) (the diagonal recursion needs no cross terms)."""
    validate.matrix("x", x)
    _check(depth, weight_var, bias_var, activation, None)
    rule = get_rule(activation)
    k = weight_var * (x * x).sum(1) / x.shape[1] + bias_var
    for _ in range(depth):
        k = weight_var * rule.diag(k)[0] + bias_var
    return k


def _single_kernel(
    which: str,
    x1: Tensor,
    x2: Tensor | None,
    depth: int,
    weight_var: float,
    bias_var: float,
    activation: str | ActivationRule,
    dtype: torch.dtype,
    block: int | None,
) -> Tensor:
    """One of the two kernels (`which`: "nngp" or "ntk"), keeping only that `[N1, N2]` output."""
    _check(depth, weight_var, bias_var, activation, block)
    a, b = _prepare(x1, x2, dtype)
    out = torch.empty(a.shape[0], b.shape[0], dtype=dtype, device=a.device)
    for r in row_blocks(a.shape[0], b.shape[0], block):
        kern = mlp_recursion(a[r], b, depth, weight_var, bias_var, activation, same_offset=_same(x2, r))
        out[r] = kern.nngp if which == "nngp" else kern.ntk
    return out


def mlp_nngp(
    x1: Tensor,
    x2: Tensor | None = None,
    depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Tensor:
    """NNGP kernel `[N1, N2]` of an MLP with `depth` hidden layers and a scalar linear readout."""
    return _single_kernel("nngp", x1, x2, depth, weight_var, bias_var, activation, dtype, block)


def mlp_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    depth: int = 1,
    weight_var: float = 2.0,
    bias_var: float = 0.0,
    activation: str | ActivationRule = "relu",
    *,
    dtype: torch.dtype = torch.float64,
    block: int | None = None,
) -> Tensor:
    """NTK `[N1, N2]` of an MLP with `depth` hidden layers and a scalar linear readout."""
    return _single_kernel("ntk", x1, x2, depth, weight_var, bias_var, activation, dtype, block)


@dataclass(frozen=True)
class MLPDescription:
    """One description of an NTK-parametrized MLP that yields the finite module and its kernels."""

    in_features: int
    width: int
    depth: int
    out_features: int = 1
    weight_var: float = 2.0
    bias_var: float = 0.0
    activation: str = "relu"

    def __post_init__(self) -> None:
        validate.count("in_features", self.in_features, 1)
        validate.count("width", self.width, 1)
        validate.count("out_features", self.out_features, 1)
        validate.mlp_arguments(self.depth, self.weight_var, self.bias_var)
        get_rule(self.activation)

    def module(self) -> nn.Sequential:
        """The finite network: `NTKLinear` layers with the same variances (weights N(0, 1))."""
        layers: list[nn.Module] = []
        width = self.in_features
        for _ in range(self.depth):
            layers += [NTKLinear(width, self.width, self.weight_var, self.bias_var), make_activation(self.activation)]
            width = self.width
        layers.append(NTKLinear(width, self.out_features, self.weight_var, self.bias_var))
        return nn.Sequential(*layers)

    def nngp(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        return mlp_nngp(x1, x2, self.depth, self.weight_var, self.bias_var, self.activation)

    def ntk(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        return mlp_ntk(x1, x2, self.depth, self.weight_var, self.bias_var, self.activation)
