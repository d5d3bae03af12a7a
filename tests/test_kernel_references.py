"""Independent references for the infinite-width kernels (issue #11, item 1).

Three lines of evidence, strongest first:
1. a plain-float recursion (`math` only, one pair of points at a time) written from the formulas in
   SOURCES.md §1, never from hypernet's helpers, checked to 1e-12;
2. neural-tangents' values for MLP kernels, committed in `tests/data/nt_mlp_kernels.npz`
   (made by `tests/data/make_nt_reference.py`, versions stored in the file), checked to 1e-12;
3. Monte Carlo over finite networks, with enough samples that a kernel 10% off fails (the test
   asserts its own power, so it cannot silently become toothless).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hypernet.kernels import hyper_kernel, hyper_nngp, hyper_ntk, mlp_kernel, mlp_nngp, mlp_ntk, nngp_diagonal

DATA = Path(__file__).resolve().parent / "data" / "nt_mlp_kernels.npz"
# Both sides compute the same closed forms in float64 with a handful of operations per layer; the
# observed difference is ~1e-15 relative. 1e-12 leaves room for rounding and nothing else (a 1e-12
# relative change is far below any plausible bug, e.g. a missing bias of 0.1 or a wrong constant).
RTOL = 1e-12


# --------------------------------------------------------------------------------------------------
# Plain-float reference (SOURCES.md §1), one pair at a time, no torch, no vectorisation.
# --------------------------------------------------------------------------------------------------
def _expect(act: str, k11: float, k22: float, k12: float, same: bool) -> tuple[float, float]:
    """`E[φ(u)φ(u')]`, `E[φ'(u)φ'(u')]` for `(u, u') ~ N(0, [[k11, k12], [k12, k22]])`.

    `same=True`: the two inputs are one point (u = u'), where the correlation is exactly 1."""
    if act == "relu":  # Cho & Saul (2009), arc-cosine kernel of degree 1 and degree 0
        if same:
            return k11 / 2.0, 0.5
        c = max(-1.0, min(1.0, k12 / math.sqrt(k11 * k22)))
        t = math.acos(c)
        e = math.sqrt(k11 * k22) * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2.0 * math.pi)
        return e, (math.pi - t) / (2.0 * math.pi)
    if act == "erf":  # Williams (1997): E[erf erf] and, differentiating, E[erf' erf'] (erf' = 2/√π e^{-u²})
        if same:
            return 2.0 / math.pi * math.asin(2.0 * k11 / (1.0 + 2.0 * k11)), 4.0 / math.pi / math.sqrt(1.0 + 4.0 * k11)
        a, b = 1.0 + 2.0 * k11, 1.0 + 2.0 * k22
        return 2.0 / math.pi * math.asin(2.0 * k12 / math.sqrt(a * b)), 4.0 / math.pi / math.sqrt(a * b - 4.0 * k12**2)
    raise ValueError(act)


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(u * v for u, v in zip(a, b))


def ref_mlp(
    x: list[float],
    y: list[float],
    same: bool,
    depth: int,
    wv: float,
    bv: float,
    act: str,
    rho: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[float, float, float, float]:
    """`(K^{L+1}(x, y), T^{L+1}(x, y), K^{L+1}(x, x), K^{L+1}(y, y))` of an MLP of `depth` hidden
    layers; with `rho = (ρ, ρ₁, ρ₂)` every covariance is multiplied by Σ_f (SOURCES.md §1):
    K¹ = ρ·lin, K^{l+1} = ρ(σ_w² E + σ_b²), T¹ = lin, T^{l+1} = σ_w² E + σ_b² + ρ σ_w² Ė T^l."""
    r, r1, r2 = rho
    d = len(x)
    lin = wv * _dot(x, y) / d + bv
    lin1, lin2 = wv * _dot(x, x) / d + bv, wv * _dot(y, y) / d + bv
    k, k1, k2, t = r * lin, r1 * lin1, r2 * lin2, lin
    for _ in range(depth):
        e, e_dot = _expect(act, k1, k2, k, same)
        e1, _ = _expect(act, k1, k1, k1, True)
        e2, _ = _expect(act, k2, k2, k2, True)
        t = wv * e + bv + r * wv * e_dot * t
        k, k1, k2 = r * (wv * e + bv), r1 * (wv * e1 + bv), r2 * (wv * e2 + bv)
    return k, t, k1, k2


def ref_hyper(
    x: list[float],
    z: list[float],
    x2: list[float],
    z2: list[float],
    same: bool,
    f_depth: int,
    g_depth: int,
    wv: float,
    bv: float,
    act: str,
) -> tuple[float, float]:
    """`(K_h, Θ_h)` of `h(x, z) = g(x; f(z))`: Σ_f, Θ_f from f's recursion, then g's with ρ = Σ_f."""
    sf, tf, sf1, sf2 = ref_mlp(z, z2, same, f_depth, wv, bv, act)
    k, t, _, _ = ref_mlp(x, x2, same, g_depth, wv, bv, act, rho=(sf, sf1, sf2))
    return k, tf * t


def _rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # rows of different norms: a kernel that ignored a norm (used a correlation instead) would show
    scale = torch.linspace(0.5, 2.0, n, dtype=torch.float64)[:, None]
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale


def _ref_matrix(fn, a: torch.Tensor, b: torch.Tensor | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """`[N1, N2]` of `fn(row_i, row_j, same)`; `b=None`: the symmetric kernel (diagonal = same point)."""
    sym = b is None
    bb = a if b is None else b
    out = np.empty((a.shape[0], bb.shape[0]))
    for i in range(a.shape[0]):
        for j in range(bb.shape[0]):
            out[i, j] = fn(i, j, sym and i == j)
    return out


def _close(ours: torch.Tensor, ref: np.ndarray, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(ours.numpy(), ref, rtol=rtol, atol=0)


ACTS = ["relu", "erf"]
WV = {"relu": 2.0, "erf": 1.7}  # erf at 1.7: a code path that hard-codes 2 fails


# Catches: a wrong Σ_f factor anywhere (missing in the readout, in T's backward product, ρ used as a
# correlation as in the released code), Θ_f replaced by Σ_f, a dropped bias variance, a layer too
# many or too few in f or g, x and z swapped, the diagonal rule applied off the diagonal, and any
# constant scaling (1.1 x) of either kernel. Symmetric calls also check the exact diagonal rule.
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bv", [0.0, 0.1])
@pytest.mark.parametrize("f_depth", [1, 2, 3])
@pytest.mark.parametrize("g_depth", [1, 2, 3])
def test_hyper_kernels_against_plain_float_recursion(act: str, bv: float, f_depth: int, g_depth: int) -> None:
    wv = WV[act]
    x1, z1 = _rows(4, 3, 1), _rows(4, 2, 2)
    x2, z2 = _rows(3, 3, 3), _rows(3, 2, 4)
    xs1, zs1, xs2, zs2 = (t.tolist() for t in (x1, z1, x2, z2))
    for sym in (False, True):
        xb, zb = (xs1, zs1) if sym else (xs2, zs2)

        def pair(i: int, j: int, same: bool, xb: list = xb, zb: list = zb) -> tuple[float, float]:  # type: ignore[type-arg]
            return ref_hyper(xs1[i], zs1[i], xb[j], zb[j], same, f_depth, g_depth, wv, bv, act)

        nngp_ref = _ref_matrix(lambda i, j, s: pair(i, j, s)[0], x1, None if sym else x2)
        ntk_ref = _ref_matrix(lambda i, j, s: pair(i, j, s)[1], x1, None if sym else x2)
        args = (None, None) if sym else (x2, z2)
        kw = dict(f_depth=f_depth, g_depth=g_depth, weight_var=wv, bias_var=bv, activation=act)
        _close(hyper_nngp(x1, z1, *args, **kw), nngp_ref)
        _close(hyper_ntk(x1, z1, *args, **kw), ntk_ref)
        # blocked computation (2 rows at a time) must give the same numbers, diagonal included
        both = hyper_kernel(x1, z1, *args, **kw, block=2)
        _close(both.nngp, nngp_ref)
        _close(both.ntk, ntk_ref)


# Catches: a wrong MLP recursion (dropped bias, wrong weight variance, off-by-one depth, NTK missing
# its forward term), and, on symmetric calls, a diagonal computed through arccos(1 - ε) rather than
# the exact identical-input rule (that is off by ~1e-8 relative, far above 1e-12).
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bv", [0.0, 0.1])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_mlp_kernels_against_plain_float_recursion(act: str, bv: float, depth: int) -> None:
    wv = WV[act]
    x1, x2 = _rows(5, 4, 5), _rows(3, 4, 6)
    a, b = x1.tolist(), x2.tolist()
    for sym in (False, True):
        bb = a if sym else b
        nngp_ref = _ref_matrix(
            lambda i, j, s, bb=bb: ref_mlp(a[i], bb[j], s, depth, wv, bv, act)[0], x1, None if sym else x2
        )
        ntk_ref = _ref_matrix(
            lambda i, j, s, bb=bb: ref_mlp(a[i], bb[j], s, depth, wv, bv, act)[1], x1, None if sym else x2
        )
        other = None if sym else x2
        _close(mlp_nngp(x1, other, depth, wv, bv, act), nngp_ref)
        _close(mlp_ntk(x1, other, depth, wv, bv, act), ntk_ref)
        both = mlp_kernel(x1, other, depth, wv, bv, act, block=2)
        _close(both.nngp, nngp_ref)
        _close(both.ntk, ntk_ref)
    diag = [ref_mlp(r, r, True, depth, wv, bv, act)[0] for r in a]
    _close(nngp_diagonal(x1, depth, wv, bv, act), np.array(diag))


# The identical-input rule on its own, for every closed-form activation and every kernel: on the
# diagonal of a symmetric kernel, with inputs whose squared norms span 100x (a rule that mixed up
# K(x, x) and K(x', x'), or used a stale layer's k, would show). Catches: a diagonal rule with a
# wrong constant (e.g. Ė = 1/π for ReLU, the erf derivative rule without its 4/π, a 1+2k where
# 1+4k belongs) — the plain-float side here uses only the `same=True` branch of `_expect`.
@pytest.mark.parametrize("act", ACTS)
def test_identical_input_rule_on_every_diagonal(act: str) -> None:
    wv, bv, depth = WV[act], 0.05, 3
    x = _rows(6, 5, 7) * torch.tensor([0.3, 0.6, 1.0, 1.5, 2.2, 3.0], dtype=torch.float64)[:, None]
    z = _rows(6, 2, 8)
    rows, zr = x.tolist(), z.tolist()
    mlp_diag = [ref_mlp(r, r, True, depth, wv, bv, act) for r in rows]
    np.testing.assert_allclose(
        mlp_nngp(x, None, depth, wv, bv, act).diagonal().numpy(), [m[0] for m in mlp_diag], rtol=RTOL
    )
    np.testing.assert_allclose(
        mlp_ntk(x, None, depth, wv, bv, act).diagonal().numpy(), [m[1] for m in mlp_diag], rtol=RTOL
    )
    hyp = [ref_hyper(rows[i], zr[i], rows[i], zr[i], True, 2, depth, wv, bv, act) for i in range(6)]
    kw = dict(f_depth=2, g_depth=depth, weight_var=wv, bias_var=bv, activation=act)
    np.testing.assert_allclose(hyper_nngp(x, z, **kw).diagonal().numpy(), [h[0] for h in hyp], rtol=RTOL)
    np.testing.assert_allclose(hyper_ntk(x, z, **kw).diagonal().numpy(), [h[1] for h in hyp], rtol=RTOL)
    # the generic (cross) path at the same points differs from the exact rule only by the rounding
    # of a correlation of 1 (arccos(1 - ε) ≈ sqrt(2ε) ~ 1e-8): a sanity bound, 1e-6, that a wrong
    # diagonal constant (a 2x or 1/π-vs-1/2 error) cannot meet
    cross = mlp_ntk(x, x.clone(), depth, wv, bv, act).diagonal().numpy()
    np.testing.assert_allclose(cross, [m[1] for m in mlp_diag], rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# neural-tangents reference values
# --------------------------------------------------------------------------------------------------
def _nt() -> dict[str, np.ndarray]:
    with np.load(DATA, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_nt_reference_file_records_its_versions() -> None:
    versions = dict(s.split("=", 1) for s in _nt()["versions"].tolist())
    assert set(versions) == {"python", "numpy", "jax", "jaxlib", "neural_tangents"}
    assert versions["neural_tangents"] == "0.6.5"


# Catches every MLP-kernel error the plain-float test catches, against a second, external
# implementation (so a shared misreading of the formulas in the test and the library would show).
# neural-tangents 0.6.5 computes the diagonal of a symmetric (x2=None) kernel exactly as well
# (measured: 1e-15 relative), so the diagonal is held to the same 1e-12.
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bv", [0.0, 0.1])
def test_mlp_kernels_against_neural_tangents(act: str, depth: int, bv: float) -> None:
    nt = _nt()
    key = f"{act}_d{depth}_b{bv:g}"
    wv = float(nt[f"{key}_weight_var"])
    x1, x2 = torch.from_numpy(nt["x1"]), torch.from_numpy(nt["x2"])
    for name, fn in (("nngp", mlp_nngp), ("ntk", mlp_ntk)):
        _close(fn(x1, x2, depth, wv, bv, act), nt[f"{key}_{name}_cross"])
        _close(fn(x1, None, depth, wv, bv, act), nt[f"{key}_{name}_sym"])


# --------------------------------------------------------------------------------------------------
# Monte Carlo over finite hypernetworks (third line)
# --------------------------------------------------------------------------------------------------
def _mc_points() -> tuple[torch.Tensor, torch.Tensor]:
    # Points with positive correlations, so every entry is of the kernel's own scale and a relative
    # bound means the same thing on and off the diagonal.
    g = torch.Generator().manual_seed(11)
    return 1.0 + 0.6 * torch.randn(3, 3, generator=g, dtype=torch.float64), 1.0 + 0.6 * torch.randn(
        3, 2, generator=g, dtype=torch.float64
    )


def _finite_ntk(
    x: torch.Tensor, z: torch.Tensor, nf: int, ng: int, outs: int, wv: float, bv: float, seed: int
) -> torch.Tensor:
    """Empirical NTK (w.r.t. f's parameters, averaged over `outs` outputs of g) of one random finite
    `h(x, z) = g(x; f(z))`, one hidden ReLU layer each, NTK parametrization, written from scratch.

    Exact chain rule per parameter block (no approximation): `v = sqrt(wv/nf) W2 a + sqrt(bv) b2`,
    so `Σ_{W2, b2} ∂h_i ∂h_j = (wv/nf a_i·a_j + bv)(∂h_i/∂v_i · ∂h_j/∂v_j)`, and likewise for W1, b1
    with `z` and the gradient at f's pre-activation."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    dz = z.shape[1]
    shapes = [(ng, d), (ng,), (outs, ng), (outs,)]
    pg = sum(math.prod(s) for s in shapes)
    W1, b1 = torch.randn(nf, dz, generator=g, dtype=torch.float64), torch.randn(nf, generator=g, dtype=torch.float64)
    W2, b2 = torch.randn(pg, nf, generator=g, dtype=torch.float64), torch.randn(pg, generator=g, dtype=torch.float64)
    pre = (math.sqrt(wv / dz) * z @ W1.T + math.sqrt(bv) * b1).requires_grad_(True)
    a = torch.relu(pre)
    v = math.sqrt(wv / nf) * a @ W2.T + math.sqrt(bv) * b2  # [n, pg]: g's weights, one set per point
    gw1, gb1, gw2, gb2 = (p.reshape(n, *s) for p, s in zip(v.split([math.prod(s) for s in shapes], 1), shapes))
    hid = torch.relu(math.sqrt(wv / d) * torch.einsum("nkd,nd->nk", gw1, x) + math.sqrt(bv) * gb1)
    out = math.sqrt(wv / ng) * torch.einsum("nok,nk->no", gw2, hid) + math.sqrt(bv) * gb2  # [n, outs]
    lin_z = wv / dz * z @ z.T + bv
    lin_a = (wv / nf * a @ a.T + bv).detach()
    ntk = torch.zeros(n, n, dtype=torch.float64)
    for o in range(outs):  # samples do not interact, so one backward gives every point's gradient
        dv, dpre = torch.autograd.grad(out[:, o].sum(), [v, pre], retain_graph=True)
        ntk += lin_a * (dv @ dv.T) + lin_z * (dpre @ dpre.T)
    return ntk / outs


def _finite_nngp(x: torch.Tensor, z: torch.Tensor, nf: int, ng: int, wv: float, bv: float, seed: int) -> torch.Tensor:
    """`E[h(x_i, z_i) h(x_j, z_j) | f's hidden layer, g's hidden layer]` of one random finite
    hypernetwork (one hidden ReLU layer each). Given f's hidden activations `a`, each generated
    coordinate `v_p` is exactly Gaussian across the points with covariance `C = wv/nf a aᵀ + bv`,
    independently over `p` (rows of W2 and b2 are independent): so g's first-layer weights are drawn
    from that law, and averaging out g's readout row (also N(0, C), independent of the rest) gives
    `C ⊙ (wv/ng hid hidᵀ + bv)` — a Rao-Blackwellised sample of the finite network's NNGP."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    dz = z.shape[1]
    W1, b1 = torch.randn(nf, dz, generator=g, dtype=torch.float64), torch.randn(nf, generator=g, dtype=torch.float64)
    a = torch.relu(math.sqrt(wv / dz) * z @ W1.T + math.sqrt(bv) * b1)
    C = wv / nf * a @ a.T + bv
    L = torch.linalg.cholesky(C)
    coords = torch.randn(ng * (d + 1), n, generator=g, dtype=torch.float64) @ L.T  # rows ~ N(0, C)
    gw1 = coords[: ng * d].reshape(ng, d, n)
    gb1 = coords[ng * d :]  # [ng, n]
    hid = torch.relu(math.sqrt(wv / d) * torch.einsum("kdn,nd->nk", gw1, x) + math.sqrt(bv) * gb1.T)
    return C * (wv / ng * hid @ hid.T + bv)


def _check_mc(samples: torch.Tensor, analytic: np.ndarray, width: int) -> None:
    s = samples.numpy()
    mean, se = s.mean(0), s.std(0, ddof=1) / math.sqrt(len(s))
    # 4 standard errors (a false alarm ~1e-4 per entry; deterministic under the fixed seeds anyway)
    # plus the finite-width bias, O(1/width): 4/width of the kernel (measured bias: <= 1.7% at 256).
    allow = 4 * se + 4.0 / width * np.abs(analytic)
    assert np.all(np.abs(mean - analytic) <= allow), (mean, analytic, allow)
    # Power: the same criterion must reject the kernel scaled by 1.1 and by 0.9, entry by entry.
    for wrong in (1.1 * analytic, 0.9 * analytic):
        assert np.all(np.abs(mean - wrong) > allow), ("test lost its power", allow / np.abs(analytic))


# Catches: hyper_ntk scaled by 10% (asserted: the criterion rejects 1.1x and 0.9x), and formula
# errors shared by the plain-float reference and the library (a common misreading of SOURCES.md §1).
# Per-seed relative spread ~0.25 at widths 256: 400 seeds give 4 SE <= 5.3%, + 1.6% width allowance.
@pytest.mark.slow
def test_hyper_ntk_against_monte_carlo_with_power() -> None:
    x, z = _mc_points()
    wv, bv, width = 2.0, 0.1, 256
    samples = torch.stack([_finite_ntk(x, z, width, width, 4, wv, bv, 1000 + s) for s in range(400)])
    _check_mc(samples, hyper_ntk(x, z, f_depth=1, g_depth=1, weight_var=wv, bias_var=bv).numpy(), width)


# Catches: hyper_nngp scaled by 10% (asserted as above), a missing Σ_f factor in the readout (the
# released code's simplification changes the kernel by far more than 10% at these points).
# Per-seed relative spread ~0.1 at widths 2048: 300 seeds give 4 SE ~2.5%, + 0.2% width allowance.
@pytest.mark.slow
def test_hyper_nngp_against_monte_carlo_with_power() -> None:
    x, z = _mc_points()
    wv, bv, width = 2.0, 0.1, 2048
    samples = torch.stack([_finite_nngp(x, z, width, width, wv, bv, 2000 + s) for s in range(300)])
    _check_mc(samples, hyper_nngp(x, z, f_depth=1, g_depth=1, weight_var=wv, bias_var=bv).numpy(), width)
    released = hyper_nngp(x, z, f_depth=1, g_depth=1, weight_var=wv, bias_var=bv, variant="released").numpy()
    assert np.all(np.abs(released / hyper_nngp(x, z, weight_var=wv, bias_var=bv).numpy() - 1) > 0.1)
