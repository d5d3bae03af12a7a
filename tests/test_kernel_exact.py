"""Exact checks of the analytic-kernel paths that the reference recursions of
`test_kernel_references.py` leave open (found by mutation testing, docs/testing.md): the Gauss-Hermite
rule on polynomial activations, where it is exact; every public function's defaults; the diagonals
that `mlp_kernel` returns; and results that stay on the inputs' device whatever the default device.

The expected values are plain floats written here or in `test_kernel_references.py` (Gaussian
moments by Isserlis' theorem, the kernel recursions of SOURCES.md §1 and docs/theory.md), never
taken from the library.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hypernet as hn
from hypernet.kernels import quadrature_rule
from test_kernel_references import _expect, ref_hyper, ref_mlp

K = hn.kernels
# Polynomial moments computed two ways in float64: the observed difference is <= 1.4e-15 relative.
# 1e-12 leaves room for rounding only; every mutant below changes a value by far more than that.
RTOL = 1e-12
A = 0.7  # φ(u) = u³ + A u²: neither even nor odd, so a sign or a swapped argument shows


def _cubic(u: torch.Tensor) -> torch.Tensor:
    return u**3 + A * u**2


def _cubic_moments(k11: float, k22: float, k12: float) -> tuple[float, float]:
    """`E[φ(u)φ(u')]`, `E[φ'(u)φ'(u')]` for `(u, u') ~ N(0, [[k11, k12], [k12, k22]])`, φ = u³ + A u²,
    φ' = 3u² + 2A u (Isserlis: E[u²u'²] = k11 k22 + 2 k12², E[u³u'³] = 9 k11 k22 k12 + 6 k12³, odd
    total degree 0)."""
    e = 9 * k11 * k22 * k12 + 6 * k12**3 + A**2 * (k11 * k22 + 2 * k12**2)
    e_dot = 9 * (k11 * k22 + 2 * k12**2) + 4 * A**2 * k12
    return e, e_dot


def _k_pairs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Variances of different sizes and cross covariances of both signs, including correlations of
    exactly +1 and -1 (row 2 against column 1: k12 = ±sqrt(k11 k22))."""
    k11 = torch.tensor([0.5, 1.3, 2.0], dtype=torch.float64)
    k22 = torch.tensor([0.8, 2.0], dtype=torch.float64)
    k12 = torch.tensor([[0.3, -0.5], [0.9, 1.2], [-0.1, 2.0]], dtype=torch.float64)
    return k11, k22, k12


# Catches: the probabilists' nodes replaced by the physicists' (weight e^{-x²}), weights not
# normalised by sqrt(2π), u and u' built from the wrong variance or the wrong correlation term
# (c z_a + s z_b), φ' taken wrongly (e_dot), and the diagonals returned for the wrong side.
def test_quadrature_rule_is_exact_on_a_polynomial() -> None:
    rule = quadrature_rule("cubic", _cubic)
    k11, k22, k12 = _k_pairs()
    e, e_dot, d1, d2 = rule.kernel(k11, k22, k12)
    ref = np.array(
        [[_cubic_moments(float(a), float(b), float(k12[i, j])) for j, b in enumerate(k22)] for i, a in enumerate(k11)]
    )
    np.testing.assert_allclose(e.numpy(), ref[..., 0], rtol=RTOL)
    np.testing.assert_allclose(e_dot.numpy(), ref[..., 1], rtol=RTOL)
    # E[φ(u)²] = E[u⁶] + A² E[u⁴] = 15 k³ + 3 A² k²;  E[φ'(u)²] = 9 E[u⁴] + 4 A² E[u²] = 27 k² + 4 A² k
    for k, got in ((k11, d1), (k22, d2)):
        np.testing.assert_allclose(got.numpy(), (15 * k**3 + 3 * A**2 * k**2).numpy(), rtol=RTOL)
    diag, diag_dot = rule.diag(k11)
    np.testing.assert_allclose(diag.numpy(), (15 * k11**3 + 3 * A**2 * k11**2).numpy(), rtol=RTOL)
    np.testing.assert_allclose(diag_dot.numpy(), (27 * k11**2 + 4 * A**2 * k11).numpy(), rtol=RTOL)
    assert rule.name == "cubic" and rule.fn is _cubic


# Catches: `points` ignored. A 4-point rule is exact up to degree 7 (E[u⁶] included); the 3-point
# rule (nodes 0, ±√3, weights 2/3, 1/6, 1/6) is exact up to degree 5 and gives E[z⁶] = 9, not 15.
def test_quadrature_rule_uses_its_number_of_points() -> None:
    k = torch.tensor([0.5, 1.7], dtype=torch.float64)
    four, _ = quadrature_rule("cubic", _cubic, points=4).diag(k)
    three, _ = quadrature_rule("cubic", _cubic, points=3).diag(k)
    np.testing.assert_allclose(four.numpy(), (15 * k**3 + 3 * A**2 * k**2).numpy(), rtol=RTOL)
    np.testing.assert_allclose(three.numpy(), (9 * k**3 + 3 * A**2 * k**2).numpy(), rtol=RTOL)


def _ref_poly(x: list[float], y: list[float], same: bool, depth: int, wv: float, bv: float) -> tuple[float, ...]:
    """`(K, T, K(x, x), K(y, y))` of an MLP with the cubic activation, plain floats (SOURCES.md §1)."""
    d = len(x)
    k = wv * math.fsum(u * v for u, v in zip(x, y)) / d + bv
    k1 = wv * math.fsum(u * u for u in x) / d + bv
    k2 = wv * math.fsum(v * v for v in y) / d + bv
    t = k
    for _ in range(depth):
        e, e_dot = _cubic_moments(k1, k1, k1) if same else _cubic_moments(k1, k2, k)
        t = wv * e + bv + wv * e_dot * t
        k, k1, k2 = wv * e + bv, wv * _cubic_moments(k1, k1, k1)[0] + bv, wv * _cubic_moments(k2, k2, k2)[0] + bv
    return k, t, k1, k2


def _rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 1.5, n)[:, None]


def _matrix(fn: Callable[[int, int, bool], float], n1: int, n2: int, sym: bool) -> np.ndarray:
    return np.array([[fn(i, j, sym and i == j) for j in range(n2)] for i in range(n1)])


# Catches: a user's ActivationRule not reaching the recursion (or a default rule used instead),
# and the symmetric diagonal rule of a quadrature rule (rule.diag) taken from the wrong variance.
@pytest.mark.parametrize("depth", [1, 2])
def test_mlp_kernels_with_a_quadrature_rule_against_plain_float(depth: int) -> None:
    rule = quadrature_rule("cubic", _cubic)
    wv, bv = 0.6, 0.1
    x1, x2 = _rows(4, 3, 1), _rows(3, 3, 2)
    a, b = x1.tolist(), x2.tolist()
    for other in (x2, None):
        bb = a if other is None else b
        n2, sym = len(bb), other is None
        ref = [
            _matrix(lambda i, j, s, q=q, bb=bb: _ref_poly(a[i], bb[j], s, depth, wv, bv)[q], 4, n2, sym) for q in (0, 1)
        ]
        np.testing.assert_allclose(K.mlp_nngp(x1, other, depth, wv, bv, rule).numpy(), ref[0], rtol=RTOL)
        np.testing.assert_allclose(K.mlp_ntk(x1, other, depth, wv, bv, rule).numpy(), ref[1], rtol=RTOL)
    diag = [_ref_poly(r, r, True, depth, wv, bv)[0] for r in a]
    np.testing.assert_allclose(K.nngp_diagonal(x1, depth, wv, bv, rule).numpy(), diag, rtol=RTOL)


# Catches: a changed default (depth 1, weight_var 2, bias_var 0, ReLU, float64, the exact variant)
# in any public function: each is called with its defaults and compared with the plain-float
# recursion at those values, on float32 inputs (the result must still be float64).
def test_defaults_of_every_analytic_kernel() -> None:
    x1, z1 = _rows(4, 3, 3).float(), _rows(4, 2, 4).float()
    a, z = x1.double().tolist(), z1.double().tolist()

    def mlp(q: int) -> np.ndarray:
        return _matrix(lambda i, j, s: ref_mlp(a[i], a[j], s, 1, 2.0, 0.0, "relu")[q], 4, 4, True)

    def hyper(q: int) -> np.ndarray:
        return _matrix(lambda i, j, s: ref_hyper(a[i], z[i], a[j], z[j], s, 1, 1, 2.0, 0.0, "relu")[q], 4, 4, True)

    both = K.mlp_kernel(x1)
    hyp = K.hyper_kernel(x1, z1)
    for got, ref in (
        (K.mlp_nngp(x1), mlp(0)),
        (K.mlp_ntk(x1), mlp(1)),
        (both.nngp, mlp(0)),
        (both.ntk, mlp(1)),
        (K.hyper_nngp(x1, z1), hyper(0)),
        (K.hyper_ntk(x1, z1), hyper(1)),
        (hyp.nngp, hyper(0)),
        (hyp.ntk, hyper(1)),
    ):
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), ref, rtol=RTOL)
    # the hypernetwork's diagonals K_h((x, z), (x, z)): g's recursion with ρ = Σ_f(z, z)
    sf = [ref_mlp(r, r, True, 1, 2.0, 0.0, "relu")[0] for r in z]
    hyp_diag = [ref_mlp(r, r, True, 1, 2.0, 0.0, "relu", rho=(s, s, s))[2] for r, s in zip(a, sf)]
    for got_diag in (hyp.diag1, hyp.diag2):
        assert got_diag.dtype == torch.float64
        np.testing.assert_allclose(got_diag.numpy(), hyp_diag, rtol=RTOL)
    for depth in (1, 2):
        diag = [ref_mlp(r, r, True, depth, 2.0, 0.0, "relu")[0] for r in a]
        np.testing.assert_allclose(K.nngp_diagonal(x1.double(), depth).numpy(), diag, rtol=RTOL)


# Catches: `mlp_kernel`'s diagonals left out, computed for the wrong set or with a default
# activation, and its unblocked path (no `block`) mishandled.
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_mlp_kernel_record_and_its_diagonals(act: str) -> None:
    wv, bv, depth = 1.7, 0.1, 2
    x1, x2 = _rows(4, 3, 5), _rows(3, 3, 6)
    a, b = x1.tolist(), x2.tolist()
    got = K.mlp_kernel(x1, x2, depth, wv, bv, act)
    ref = [_matrix(lambda i, j, s, q=q: ref_mlp(a[i], b[j], s, depth, wv, bv, act)[q], 4, 3, False) for q in (0, 1)]
    np.testing.assert_allclose(got.nngp.numpy(), ref[0], rtol=RTOL)
    np.testing.assert_allclose(got.ntk.numpy(), ref[1], rtol=RTOL)
    np.testing.assert_allclose(got.diag1.numpy(), [ref_mlp(r, r, True, depth, wv, bv, act)[0] for r in a], rtol=RTOL)
    np.testing.assert_allclose(got.diag2.numpy(), [ref_mlp(r, r, True, depth, wv, bv, act)[0] for r in b], rtol=RTOL)


# Catches: a result allocated on the default device rather than the inputs' (`device=` dropped):
# under `torch.device("meta")` a factory call without a device makes a meta tensor.
def test_results_stay_on_the_inputs_device_whatever_the_default() -> None:
    x, z = _rows(5, 3, 7), _rows(5, 2, 8)

    def every() -> list[torch.Tensor]:
        mlp = K.mlp_kernel(x, depth=1, activation="tanh")  # tanh: the quadrature rule's tensors too
        hyp = K.hyper_kernel(x, z, g_depth=2)
        return [mlp.nngp, mlp.ntk, mlp.diag1, mlp.diag2, hyp.nngp, hyp.ntk, hyp.diag1, hyp.diag2, K.mlp_ntk(x)]

    plain = every()
    with torch.device("meta"):
        moved = every()
    for n, (want, got) in enumerate(zip(plain, moved)):
        assert got.device.type == "cpu", n
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# Catches: `MLPDescription.module` dropping a hidden layer, a variance (an NTKLinear built with the
# default 2.0 / 0.0 or with weight_var and bias_var swapped) or the activation; its kernels called
# with other values than the description's; and changed defaults of the description itself.
def test_mlp_description_module_forward_by_hand_and_its_kernels() -> None:
    desc = K.MLPDescription(3, 5, 2, out_features=2, weight_var=1.7, bias_var=0.3, activation="erf")
    torch.manual_seed(0)
    net = desc.module().double()
    x = _rows(4, 3, 9)
    h = x
    linears = [m for m in net if isinstance(m, hn.layers.NTKLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 5), (5, 5), (5, 2)]
    for n, m in enumerate(linears):  # sqrt(wv / fan_in) W h + sqrt(bv) b, erf between layers
        h = math.sqrt(1.7 / m.in_features) * h @ m.weight.T + math.sqrt(0.3) * m.bias
        h = torch.erf(h) if n < 2 else h
    with torch.no_grad():
        torch.testing.assert_close(net(x), h, rtol=1e-12, atol=1e-12)
    a = x.tolist()
    for q, got in enumerate((desc.nngp(x, x[:2]), desc.ntk(x, x[:2]))):
        ref = _matrix(lambda i, j, s, q=q: ref_mlp(a[i], a[j], False, 2, 1.7, 0.3, "erf")[q], 4, 2, False)
        np.testing.assert_allclose(got.numpy(), ref, rtol=RTOL)
    default = K.MLPDescription(3, 5, 1)
    assert (default.out_features, default.weight_var, default.bias_var, default.activation) == (1, 2.0, 0.0, "relu")


# Catches: the clamp of erf's correlation 2k12 / sqrt((1 + 2k11)(1 + 2k22)) dropped or widened. The
# true value is strictly inside (-1, 1), but for inputs of norm ~1e8 (k ~ 1e16) rounding puts some
# entries past ±1 (measured: 3 of the 60 pairs here, each way), where arcsin is NaN. For a point
# against itself or its negative, E[erf(u) erf(±u)] = (2/π) asin(2 k12 / (1 + 2k)), in plain floats;
# arcsin at 1 - δ is off by ~sqrt(2δ) ~ 1e-8 for a rounding δ ~ 1e-16, hence rtol 1e-7.
def test_erf_nngp_where_rounding_passes_a_correlation_of_one() -> None:
    x = _rows(60, 3, 10) * 3e8
    wv, bv = 2.0, 0.1
    for sign in (1.0, -1.0):
        got = K.mlp_nngp(x, sign * x, 1, wv, bv, "erf").diagonal()
        ref = []
        for r in x.tolist():
            k, k12 = wv * math.fsum(u * u for u in r) / 3 + bv, sign * wv * math.fsum(u * u for u in r) / 3 + bv
            ref.append(wv * 2 / math.pi * math.asin(2 * k12 / (1 + 2 * k)) + bv)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-7)


# Catches: the lower clamp of ReLU's cosine dropped or widened (-2). For a point against its own
# negative the cosine is -1, and rounding puts it below -1 (measured: 11 of these 60 pairs), where
# arccos is NaN. The plain-float reference clamps too; near t = π the kernel's terms are
# O(sqrt(δ)) ~ 1e-8 of k for a rounding δ ~ 1e-16, hence atol 1e-7 · max k.
@pytest.mark.parametrize("depth", [1, 2])
def test_relu_kernels_of_points_against_their_negatives(depth: int) -> None:
    x = _rows(60, 3, 11)
    wv, bv = 2.0, 0.0
    a = x.tolist()
    scale = max(wv * math.fsum(u * u for u in r) / 3 for r in a)
    for q, fn in ((0, K.mlp_nngp), (1, K.mlp_ntk)):
        got = fn(x, -x, depth, wv, bv, "relu").diagonal().numpy()
        ref = [ref_mlp(r, [-u for u in r], False, depth, wv, bv, "relu")[q] for r in a]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7 * scale)


def _ref_released(
    x: list[float], z: list[float], x2: list[float], z2: list[float], same: bool, fd: int, gd: int, wv: float, bv: float
) -> tuple[float, float]:
    """`(K_h, Θ_h)` of the released code's recursion (docs/theory.md, "The released code"): g's
    forward layers carry the correlation c = ρ / sqrt(ρ₁ ρ₂) (diagonals 1), the readout no factor,
    the backward products none; Θ_h = Θ_f · T. ReLU, plain floats."""
    sf, tf, sf1, sf2 = ref_mlp(z, z2, same, fd, wv, bv, "relu")
    c = sf / math.sqrt(sf1 * sf2)
    d = len(x)
    lin = wv * math.fsum(u * v for u, v in zip(x, x2)) / d + bv
    k1, k2 = wv * math.fsum(u * u for u in x) / d + bv, wv * math.fsum(v * v for v in x2) / d + bv
    k, t = c * lin, lin
    for layer in range(gd):
        e, e_dot = _expect("relu", k1, k2, k, same)
        t = wv * e + bv + wv * e_dot * t
        factor = 1.0 if layer == gd - 1 else c
        e1, e2 = _expect("relu", k1, k1, k1, True)[0], _expect("relu", k2, k2, k2, True)[0]
        k, k1, k2 = factor * (wv * e + bv), wv * e1 + bv, wv * e2 + bv
    return k, tf * t


# Catches: `variant` not passed on by hyper_nngp / hyper_ntk, and any change to the released
# branch of the recursion (the correlation, the ones on its diagonals, the factor left off the
# readout and the backward products), against the released recursion written out in plain floats.
@pytest.mark.parametrize(("fd", "gd"), [(1, 1), (2, 2), (1, 3)])
def test_released_variant_against_plain_float(fd: int, gd: int) -> None:
    wv, bv = 2.0, 0.1
    x1, z1, x2, z2 = _rows(4, 3, 12), _rows(4, 2, 13) * 3, _rows(3, 3, 14), _rows(3, 2, 15)
    a, za, b, zb = (t.tolist() for t in (x1, z1, x2, z2))
    for sym in (False, True):
        bb, zz = (a, za) if sym else (b, zb)
        n2 = len(bb)
        ref = [
            _matrix(
                lambda i, j, s, q=q, bb=bb, zz=zz: _ref_released(a[i], za[i], bb[j], zz[j], s, fd, gd, wv, bv)[q],
                4,
                n2,
                sym,
            )
            for q in (0, 1)
        ]
        args = (None, None) if sym else (x2, z2)
        kw = dict(f_depth=fd, g_depth=gd, weight_var=wv, bias_var=bv, variant="released")
        np.testing.assert_allclose(K.hyper_nngp(x1, z1, *args, **kw).numpy(), ref[0], rtol=RTOL)
        np.testing.assert_allclose(K.hyper_ntk(x1, z1, *args, **kw).numpy(), ref[1], rtol=RTOL)


def _spy_rows(monkeypatch: pytest.MonkeyPatch, module: object) -> list[tuple[int, int]]:
    """Record the `[rows, columns]` of every `mlp_recursion` call made through `module`."""
    calls: list[tuple[int, int]] = []
    real = module.mlp_recursion  # type: ignore[attr-defined]

    def spy(x1: torch.Tensor, x2: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append((x1.shape[0], x2.shape[0]))
        return real(x1, x2, *args, **kwargs)

    monkeypatch.setattr(module, "mlp_recursion", spy)
    return calls


# Catches: `block` ignored by any public function (the values agree whatever the blocking, so only
# the row counts show it), and the default block size changed: 2^20 numbers per block temporary
# (about 8 MB of float64), so 2^20 // N2 rows, at least 16.
def test_rows_are_computed_in_the_blocks_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    x, z = _rows(5, 3, 16), _rows(5, 2, 17)
    calls = _spy_rows(monkeypatch, hn.kernels.analytic)
    for fn in (K.mlp_kernel, K.mlp_nngp, K.mlp_ntk):
        calls.clear()
        fn(x, None, 1, block=2)
        assert calls == [(2, 5), (2, 5), (1, 5)], fn.__name__
    wide = torch.ones(2**15, 1, dtype=torch.float64)
    for fn in (K.mlp_kernel, K.mlp_ntk):
        calls.clear()
        fn(torch.ones(40, 1, dtype=torch.float64), wide)
        assert calls == [(32, 2**15), (8, 2**15)], fn.__name__  # 2^20 // 2^15 = 32 rows
    calls.clear()
    K.mlp_nngp(torch.ones(20, 1, dtype=torch.float64), torch.ones(2**17, 1, dtype=torch.float64))
    assert calls == [(16, 2**17), (4, 2**17)]  # 2^20 // 2^17 = 8, raised to the minimum 16
    calls.clear()
    K.mlp_nngp(torch.ones(2**19 + 1, 1, dtype=torch.float64), torch.ones(0, 1, dtype=torch.float64))
    assert calls == [(2**19 + 1, 0)]  # no columns: counted as one, 2^20 rows per block
    hyper_calls = _spy_rows(monkeypatch, hn.kernels.hyper)
    for fn in (K.hyper_kernel, K.hyper_nngp, K.hyper_ntk):  # f's and g's recursion per block
        hyper_calls.clear()
        fn(x, z, block=2)
        assert hyper_calls == [(2, 5), (2, 5), (2, 5), (2, 5), (1, 5), (1, 5)], fn.__name__
    hyper_calls.clear()
    K.hyper_kernel(torch.ones(40, 1, dtype=torch.float64), torch.ones(40, 1, dtype=torch.float64), wide, wide)
    assert hyper_calls == [(32, 2**15)] * 2 + [(8, 2**15)] * 2


# Catches: `dtype` not passed on by hyper_nngp / hyper_ntk (hyper_kernel's default float64 would
# be used instead of the float32 asked for).
def test_hyper_kernels_in_the_dtype_asked_for() -> None:
    x, z = _rows(4, 3, 18), _rows(4, 2, 19)
    for act in ("relu", "tanh"):  # tanh: the quadrature rule's nodes and weights in that dtype too
        for fn in (K.hyper_kernel, K.hyper_nngp, K.hyper_ntk, K.mlp_kernel, K.mlp_nngp, K.mlp_ntk):
            if fn.__name__.startswith("hyper"):
                out = fn(x, z, activation=act, dtype=torch.float32)
            else:
                out = fn(x, activation=act, dtype=torch.float32)
            parts = [out.nngp, out.ntk, out.diag1, out.diag2] if isinstance(out, K.Kernel) else [out]
            assert all(t.dtype == torch.float32 for t in parts), (act, fn.__name__)


# Catches: `hyper_kernel`'s diagonals wrong, missing or taken from one block only (blocks of 2 rows
# here), and a bug mutation testing found: with no rows in x1 no block ran, so `diag2` came back
# empty instead of x2's diagonal (now one empty block still runs g's recursion).
def test_hyper_kernel_diagonals_blocked_and_with_no_rows_in_x1() -> None:
    x1, z1, x2, z2 = _rows(5, 3, 20), _rows(5, 2, 21), _rows(3, 3, 22), _rows(3, 2, 23)
    kw = dict(f_depth=1, g_depth=2, weight_var=2.0, bias_var=0.1)

    def diag(x: torch.Tensor, z: torch.Tensor) -> list[float]:
        return [ref_hyper(r, q, r, q, True, 1, 2, 2.0, 0.1, "relu")[0] for r, q in zip(x.tolist(), z.tolist())]

    got = K.hyper_kernel(x1, z1, x2, z2, **kw, block=2)
    np.testing.assert_allclose(got.diag1.numpy(), diag(x1, z1), rtol=RTOL)
    np.testing.assert_allclose(got.diag2.numpy(), diag(x2, z2), rtol=RTOL)
    empty = K.hyper_kernel(x1[:0], z1[:0], x2, z2, **kw)
    assert empty.nngp.shape == (0, 3) and empty.ntk.shape == (0, 3) and empty.diag1.shape == (0,)
    np.testing.assert_allclose(empty.diag2.numpy(), diag(x2, z2), rtol=RTOL)


# Catches: a closed-form rule with the wrong name or forward function, and a named activation
# without a closed form (tanh) not reaching the quadrature rule with its own function and name.
def test_rules_by_name_carry_their_name_and_function() -> None:
    u = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    for name, fn in (("relu", torch.relu), ("erf", torch.erf), ("tanh", torch.tanh), ("gelu", F.gelu)):
        rule = K.get_rule(name)
        assert rule.name == name
        torch.testing.assert_close(rule.fn(u), fn(u), rtol=0, atol=0)
    tanh = K.get_rule("tanh")
    assert K.get_rule(tanh) is tanh  # a ready rule is used as it is


def _layers(module: torch.nn.Module) -> list[tuple[str, int, int, float, float] | str]:
    """Each NTKLinear as (in, out, weight_var, bias_var), each other leaf module by its type name."""
    out: list[tuple[str, int, int, float, float] | str] = []
    for m in module.modules():
        if isinstance(m, hn.layers.NTKLinear):
            out.append(("ntk", m.in_features, m.out_features, m.weight_var, m.bias_var))
        elif not list(m.children()):
            out.append(type(m).__name__)
    return out


# Catches: `HyperDescription` building f or g with another depth, width, activation, variance or
# parametrization than described, or its kernels called with other values (or x and z, or the
# second set, mixed up); and a changed default of the description.
def test_hyper_description_module_and_kernels() -> None:
    desc = K.HyperDescription(
        3, 2, 16, 8, f_depth=2, g_depth=1, out_features=2, weight_var=1.7, bias_var=0.1, activation="erf"
    )
    model = desc.module()
    assert _layers(model.target.module) == [("ntk", 3, 8, 1.7, 0.1), "Erf", ("ntk", 8, 2, 1.7, 0.1)]
    p = 3 * 8 + 8 + 8 * 2 + 2  # g's parameters, the hypernetwork's outputs
    hidden = [("ntk", 2, 16, 1.7, 0.1), "Erf", ("ntk", 16, 16, 1.7, 0.1), "Erf"]
    assert _layers(model.hypernetwork) == ["Identity", *hidden, ("ntk", 16, p, 1.7, 0.1)]
    prim = desc.primary()
    assert (prim.in_features, prim.width, prim.depth, prim.out_features) == (3, 8, 1, 2)
    assert (prim.weight_var, prim.bias_var, prim.activation) == (1.7, 0.1, "erf")
    x1, z1, x2, z2 = _rows(4, 3, 24), _rows(4, 2, 25), _rows(3, 3, 26), _rows(3, 2, 27)
    a, za, b, zb = (t.tolist() for t in (x1, z1, x2, z2))
    for q, fn in ((0, desc.nngp), (1, desc.ntk)):
        ref = _matrix(
            lambda i, j, s, q=q: ref_hyper(a[i], za[i], b[j], zb[j], s, 2, 1, 1.7, 0.1, "erf")[q], 4, 3, False
        )
        np.testing.assert_allclose(fn(x1, z1, x2, z2).numpy(), ref, rtol=RTOL)
        sym = _matrix(lambda i, j, s, q=q: ref_hyper(a[i], za[i], a[j], za[j], s, 2, 1, 1.7, 0.1, "erf")[q], 4, 4, True)
        np.testing.assert_allclose(fn(x1, z1).numpy(), sym, rtol=RTOL)
    default = K.HyperDescription(3, 2, 16, 8)
    assert (default.f_depth, default.g_depth, default.out_features) == (1, 1, 1)
    assert (default.weight_var, default.bias_var, default.activation) == (2.0, 0.0, "relu")
