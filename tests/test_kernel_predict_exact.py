"""`kernel_predict` against NumPy / SciPy written out in the test (found by mutation testing,
docs/testing.md): a `[N]` target, the variance from a diagonal `k_test`, the regularised diagonal,
singular training kernels (the least-squares path, against the pseudo-inverse), mixed dtypes, and
results on the inputs' device and in their dtype whatever torch's defaults.

Tolerances: float64 throughout and well-conditioned kernels (condition number < 1e3 here), so a
Cholesky or eigen solve and NumPy's agree to ~1e-13; 1e-9 is far below any real error (a dropped
regulariser of 0.1 x the mean diagonal, a wrong sign, a transposed kernel change results by O(0.1)).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import hypernet as hn
from hypernet.kernels import kernel_predict

K = hn.kernels
RTOL, ATOL = 1e-9, 1e-11


def _problem(n: int = 6, m: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(m, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return K.mlp_ntk(x, depth=2, bias_var=0.1), K.mlp_ntk(xt, x, depth=2, bias_var=0.1), K.mlp_ntk(xt, depth=2), y


# Catches: a `[N]` target not turned into a column (or its mean not squeezed back), the variance
# from a diagonal `k_test` taken with the wrong sign or from the full matrix, `variance` set to
# anything but None without a `k_test`, and the regulariser `diag_reg · mean(diag k_train)`
# subtracted, divided, or left out; the same `[N]` target at a finite time t.
@pytest.mark.parametrize("diag_reg", [0.0, 0.1])
def test_posterior_against_numpy(diag_reg: float) -> None:
    k, ks, kss, y = _problem()
    kn, ksn, kssn, yn = k.numpy(), ks.numpy(), kss.numpy(), y.numpy()
    reg = kn + diag_reg * np.mean(np.diag(kn)) * np.eye(6)
    mean = ksn @ np.linalg.solve(reg, yn)
    cov = kssn - ksn @ np.linalg.solve(reg, ksn.T)
    full = kernel_predict(k, y, ks, kss, diag_reg=diag_reg)
    np.testing.assert_allclose(full.mean.numpy(), mean, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(full.variance.numpy(), cov, rtol=RTOL, atol=ATOL)
    diag = kernel_predict(k, y, ks, torch.diagonal(kss).clone(), diag_reg=diag_reg)
    np.testing.assert_allclose(diag.variance.numpy(), np.diag(cov), rtol=RTOL, atol=ATOL)
    one = kernel_predict(k, y[:, 1], ks, diag_reg=diag_reg)
    assert one.mean.shape == (4,) and one.variance is None
    np.testing.assert_allclose(one.mean.numpy(), mean[:, 1], rtol=RTOL, atol=ATOL)
    t = 0.7  # gradient flow at time t, regularised kernel, against scipy's matrix exponential
    flow = ksn @ np.linalg.solve(reg, (np.eye(6) - scipy.linalg.expm(-t * reg)) @ yn)
    got = kernel_predict(k, y, ks, t=t, diag_reg=diag_reg)
    np.testing.assert_allclose(got.mean.numpy(), flow, rtol=RTOL, atol=ATOL)
    assert got.variance is None
    got_one = kernel_predict(k, y[:, 1], ks, t=t, diag_reg=diag_reg)  # an [N] target gives an [M] mean
    assert got_one.mean.shape == (4,)
    np.testing.assert_allclose(got_one.mean.numpy(), flow[:, 1], rtol=RTOL, atol=ATOL)


# Catches: the Cholesky failure not detected (info compared with 1, or the branches swapped), the
# fallback for the mean or the variance broken, and a bug this test found: the fallback used
# torch.linalg.lstsq, whose default CPU driver (gelsy) returned all zeros for a kernel with a zero
# row. A training point at the origin with no bias variance has such a row in the NNGP (Cholesky
# fails at pivot 1); a rank-2 Gram matrix of three points fails at pivot 3. Reference: the
# minimum-norm least-squares solution, NumPy's pinv(K) b (SVD); 1e-8: nonzero eigenvalues of at least
# 0.5 here, so both sides agree to ~1e-14.
@pytest.mark.parametrize("case", ["zero row", "rank 2"])
def test_singular_training_kernel_falls_back_to_least_squares(case: str) -> None:
    if case == "zero row":
        x = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.3, 1.2], [0.8, -0.9]], dtype=torch.float64)
        k = K.mlp_nngp(x, depth=1, bias_var=0.0)
        pivot = 1
    else:
        a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        k = a @ a.T  # [[1, 0, 1], [0, 1, 1], [1, 1, 2]]: exact in floating point, rank 2
        pivot = 3
    assert int(torch.linalg.cholesky_ex(k).info) == pivot
    n = k.shape[0]
    g = torch.Generator().manual_seed(1)
    ks = torch.randn(2, n, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    kss = torch.eye(2, dtype=torch.float64)
    pinv = np.linalg.pinv(k.numpy())
    got = kernel_predict(k, y, ks, kss)
    np.testing.assert_allclose(got.mean.numpy(), ks.numpy() @ pinv @ y.numpy(), rtol=1e-8, atol=1e-10)
    cov = kss.numpy() - ks.numpy() @ pinv @ ks.numpy().T
    np.testing.assert_allclose(got.variance.numpy(), cov, rtol=1e-8, atol=1e-10)


# Catches: `k_test_train`, `k_test` or `y_train` not cast to `k_train`'s dtype (float32 or integer
# targets next to a float64 kernel), and the regulariser's identity made in torch's default dtype
# or on the default device instead of `k_train`'s.
def test_dtypes_and_devices_follow_k_train() -> None:
    k, ks, kss, y = _problem()
    # float32 kernels and integer targets hold the same numbers as these float64 ones
    want = kernel_predict(k, y.round(), ks.float().double(), kss.float().double(), diag_reg=0.1)
    mixed = kernel_predict(k, y.round().long(), ks.float(), kss.float(), diag_reg=0.1)
    assert mixed.mean.dtype == torch.float64 and mixed.variance.dtype == torch.float64
    np.testing.assert_allclose(mixed.mean.numpy(), want.mean.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(mixed.variance.numpy(), want.variance.numpy(), rtol=RTOL, atol=ATOL)
    with torch.device("meta"):
        moved = kernel_predict(k, y, ks, kss, diag_reg=0.1)
        flowed = kernel_predict(k, y, ks, t=0.5, diag_reg=0.1)
    assert moved.mean.device.type == "cpu" and flowed.mean.device.type == "cpu"
    torch.testing.assert_close(moved.mean, kernel_predict(k, y, ks, kss, diag_reg=0.1).mean, rtol=0, atol=0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single = kernel_predict(k.float(), y.float(), ks.float(), kss.float(), diag_reg=0.1)
    finally:
        torch.set_default_dtype(old)
    assert single.mean.dtype == torch.float32 and single.variance.dtype == torch.float32
