"""Activation rules for infinite-width kernels: for a centred Gaussian pair `(u, u')` with
covariance `[[k11, k12], [k12, k22]]`, the expectations `E[φ(u)φ(u')]` and `E[φ'(u)φ'(u')]`.

Like neural-tangents' `stax` layers, each activation keeps its forward function and its kernel rule
side by side. ReLU and erf are closed forms; any other activation is integrated by Gauss-Hermite
quadrature (`n` points per dimension, exact for polynomials of degree < 2n).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hypernet.activations import get_activation

# Rounding can push k12 / sqrt(k11 k22) a few ulps past ±1, where arccos is undefined: clamp.
# (Clamping strictly inside would bias the diagonal: arccos(1 - e) ≈ sqrt(2e).)


@dataclass(frozen=True)
class ActivationRule:
    """`fn` (the forward), `kernel(k11, k22, k12) -> (E, E_dot, E_diag1, E_diag2)` for pairs, and
    `diag(k) -> (E[φ(u)²], E[φ'(u)²])` for identical inputs (`u ~ N(0, k)`), used to keep a
    symmetric kernel's diagonal exact (rounding would otherwise put the correlation at 1 - 1e-16,
    and arccos there is off by 1e-8)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    kernel: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]
    diag: Callable[[Tensor], tuple[Tensor, Tensor]]


def _relu_kernel(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # Arc-cosine kernel of degree 1 (Cho & Saul 2009) and its derivative kernel. Written with
    # in-place ops: at N = 4,000 each N x N temporary is 64 MB, and allocating one costs more than
    # the arithmetic; sin t comes from cos t rather than sin(arccos(.)).
    norm = torch.outer(torch.sqrt(k11), torch.sqrt(k22))
    cos_t = torch.div(k12, norm.clamp_min(1e-300)).clamp_(-1.0, 1.0)
    t_rest = torch.arccos(cos_t).neg_().add_(math.pi)  # π - t
    e = torch.mul(cos_t, cos_t).neg_().add_(1).clamp_(min=0).sqrt_()  # sin t
    e.addcmul_(t_rest, cos_t).mul_(norm).div_(2 * math.pi)
    e_dot = t_rest.div_(2 * math.pi)
    return e, e_dot, k11 / 2, k22 / 2


def _relu_diag(k: Tensor) -> tuple[Tensor, Tensor]:
    return k / 2, torch.full_like(k, 0.5)


def _erf_kernel(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a, b = 1 + 2 * k11[:, None], 1 + 2 * k22[None, :]
    e = (2 / math.pi) * torch.arcsin((2 * k12 / torch.sqrt(a * b)).clamp(-1, 1))
    e_dot = (4 / math.pi) / torch.sqrt(a * b - 4 * k12**2)
    diag1 = (2 / math.pi) * torch.arcsin(2 * k11 / (1 + 2 * k11))
    diag2 = (2 / math.pi) * torch.arcsin(2 * k22 / (1 + 2 * k22))
    return e, e_dot, diag1, diag2


def _erf_diag(k: Tensor) -> tuple[Tensor, Tensor]:
    return (2 / math.pi) * torch.arcsin(2 * k / (1 + 2 * k)), (4 / math.pi) / torch.sqrt(1 + 4 * k)


def quadrature_rule(name: str, fn: Callable[[Tensor], Tensor], points: int = 32) -> ActivationRule:
    """A kernel rule for any elementwise `fn`, by Gauss-Hermite quadrature; `fn'` by autograd."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)  # probabilists': weight exp(-x^2/2)
    z_np, w_np = nodes, weights / math.sqrt(2 * math.pi)

    def derivative(x: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x).sum(), x)
        return g

    def kernel(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z = torch.as_tensor(z_np, dtype=k12.dtype, device=k12.device)
        w = torch.as_tensor(w_np, dtype=k12.dtype, device=k12.device)
        s1, s2 = torch.sqrt(k11)[:, None], torch.sqrt(k22)[None, :]
        c = (k12 / (s1 * s2).clamp_min(1e-300)).clamp(-1, 1)
        s = torch.sqrt((1 - c**2).clamp_min(0))
        # u = s1 z_a, u' = s2 (c z_a + s z_b); sum over the grid, one z_a at a time to bound memory
        e = torch.zeros_like(k12)
        e_dot = torch.zeros_like(k12)
        for a in range(points):
            u = s1 * z[a]
            phi_u, dphi_u = fn(u), derivative(u)
            v = s2[..., None] * (c[..., None] * z[a] + s[..., None] * z)  # [N1, N2, points]
            e += w[a] * phi_u * (fn(v) * w).sum(-1)
            e_dot += w[a] * dphi_u * (derivative(v) * w).sum(-1)
        return e, e_dot, diag(k11)[0], diag(k22)[0]

    def diag(k: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.as_tensor(z_np, dtype=k.dtype, device=k.device)
        w = torch.as_tensor(w_np, dtype=k.dtype, device=k.device)
        u = torch.sqrt(k)[:, None] * z
        return (fn(u).pow(2) * w).sum(-1), (derivative(u).pow(2) * w).sum(-1)

    return ActivationRule(name, fn, kernel, diag)


def get_rule(activation: str | ActivationRule) -> ActivationRule:
    """The kernel rule of `activation` (a name from `hypernet.activations.ACTIVATIONS` or a ready
    `ActivationRule`): closed forms for ReLU and erf, Gauss-Hermite quadrature for the others."""
    if isinstance(activation, ActivationRule):
        return activation
    if activation == "relu":
        return ActivationRule("relu", torch.relu, _relu_kernel, _relu_diag)
    if activation == "erf":
        return ActivationRule("erf", torch.erf, _erf_kernel, _erf_diag)
    return quadrature_rule(activation, get_activation(activation).fn)
