"""Predictions from kernels: the GP posterior, and the mean output of an infinitely wide network
trained by gradient descent on the squared loss, at any time `t` (and `t = ∞`).

Gradient flow convention: loss `½ Σ_i ‖f(x_i) − y_i‖²`, `df/dt = −lr · Θ (f − y)`, starting from a
zero-mean prior. Then `f_t(x*) = Θ* Θ⁻¹ (I − e^{−lr Θ t}) y`; at `t = ∞` this is `Θ* Θ⁻¹ y`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hypernet.kernels import validate


@dataclass(frozen=True)
class Prediction:
    """`mean: [M, O]`, and `variance: [M]` (diagonal) or `[M, M]` when a test-test kernel was given."""

    mean: Tensor
    variance: Tensor | None = None


def kernel_predict(
    k_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    k_test: Tensor | None = None,
    *,
    t: float | None = None,
    lr: float = 1.0,
    diag_reg: float = 0.0,
) -> Prediction:
    """Predict at test points from `k_train: [N, N]`, `y_train: [N, O]` (or `[N]`), `k_test_train: [M, N]`.

    `t=None`: the GP posterior mean (and variance, from `k_test` `[M, M]` or its diagonal `[M]`),
    which is also the `t = ∞` limit of gradient descent. A finite `t`: the gradient-descent mean
    at time `t`. `diag_reg` adds `diag_reg · mean(diag(k_train))` to the diagonal.
    """
    for name, value in (("k_train", k_train), ("y_train", y_train), ("k_test_train", k_test_train)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(value).__name__}")
    if k_train.ndim != 2 or k_train.shape[0] != k_train.shape[1]:
        raise ValueError(f"k_train: expected a square [N, N], got {list(k_train.shape)}")
    if not k_train.is_floating_point():
        raise TypeError(f"k_train: expected a floating-point Tensor, got {k_train.dtype}")
    n = k_train.shape[0]
    if y_train.ndim not in (1, 2) or y_train.shape[0] != n:
        raise ValueError(f"y_train: expected {n} rows (k_train is {n}x{n}), got {list(y_train.shape)}")
    squeeze = y_train.ndim == 1
    y = y_train[:, None] if squeeze else y_train
    if k_test_train.ndim != 2 or k_test_train.shape[1] != n:
        raise ValueError(f"k_test_train: expected [M, {n}], got {list(k_test_train.shape)}")
    m = k_test_train.shape[0]
    if k_test is not None:
        if not isinstance(k_test, Tensor):
            raise TypeError(f"k_test: expected a Tensor, got {type(k_test).__name__}")
        if k_test.shape not in ((m, m), (m,)):
            raise ValueError(f"k_test: expected [{m}, {m}] or its diagonal [{m}], got {list(k_test.shape)}")
    # every entry, not only the triangle a Cholesky factorization reads: a NaN anywhere is an error
    for name, given in (("k_train", k_train), ("y_train", y_train), ("k_test_train", k_test_train), ("k_test", k_test)):
        if given is not None:
            validate.finite(name, given)
    if t is not None and t != math.inf:  # t = inf is the GP posterior mean, like t = None
        validate.nonnegative("t", t)
    validate.nonnegative("lr", lr, positive=True)
    validate.nonnegative("diag_reg", diag_reg)
    k_test_train = k_test_train.to(k_train)
    k_test = None if k_test is None else k_test.to(k_train)
    y = y.to(k_train.dtype)
    k = k_train + diag_reg * torch.diagonal(k_train).mean() * torch.eye(n, dtype=k_train.dtype, device=k_train.device)
    if t is None or math.isinf(t):
        chol, info = torch.linalg.cholesky_ex(k)
        if int(info) == 0:
            alpha = torch.cholesky_solve(y, chol)
            solve = lambda b: torch.cholesky_solve(b, chol)  # noqa: E731
        else:  # not numerically positive definite: the minimum-norm least-squares solution pinv(k) b.
            # Not torch.linalg.lstsq: its default CPU driver (gelsy) returned 0 for a kernel with a zero
            # row (a point at the origin without bias variance), and CUDA's only driver needs full rank.
            pinv = torch.linalg.pinv(k, hermitian=True)
            alpha = pinv @ y
            solve = lambda b: pinv @ b  # noqa: E731
        mean = k_test_train @ alpha
        variance = None
        if k_test is not None:
            reduced = k_test_train @ solve(k_test_train.T)
            variance = k_test - reduced if k_test.ndim == 2 else k_test - torch.diagonal(reduced)
        return Prediction(mean[:, 0] if squeeze else mean, variance)
    evals, evecs = torch.linalg.eigh(k)
    # Θ⁻¹ (I − e^{−lr Θ t}) on the eigenbasis; -expm1(-x)/λ stays accurate as λ → 0 (→ lr t).
    safe = torch.where(evals.abs() > 1e-300, evals, torch.ones_like(evals))
    factor = torch.where(evals.abs() > 1e-300, -torch.expm1(-lr * t * evals) / safe, lr * t * torch.ones_like(evals))
    mean = k_test_train @ (evecs @ (factor[:, None] * (evecs.T @ y)))
    return Prediction(mean[:, 0] if squeeze else mean, None)
