from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import hypernet as hn
from hypernet.kernels import MLPDescription, empirical_ntk, functional, kernel_predict

K = hn.kernels


def _points(n: int = 4, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def test_one_hidden_layer_relu_against_independent_closed_form() -> None:
    """Arc-cosine kernels written out in NumPy from Cho & Saul, independently of the library."""
    x = _points(5).numpy()
    wv, bv = 1.7, 0.3
    d = x.shape[1]
    k0 = wv * x @ x.T / d + bv
    n = np.sqrt(np.outer(np.diag(k0), np.diag(k0)))
    theta = np.arccos(np.clip(k0 / n, -1, 1))
    relu_e = n * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    nngp = wv * relu_e + bv
    ntk = nngp + wv * (np.pi - theta) / (2 * np.pi) * k0
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(K.mlp_nngp(xt, depth=1, weight_var=wv, bias_var=bv).numpy(), nngp, rtol=1e-12)
    np.testing.assert_allclose(K.mlp_ntk(xt, depth=1, weight_var=wv, bias_var=bv).numpy(), ntk, rtol=1e-12)


def _mc_mlp(desc: MLPDescription, x: torch.Tensor, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed NNGP samples f(x) f(x)ᵀ and empirical NTKs of random finite networks."""
    nngps, ntks = [], []
    for s in range(seeds):
        torch.manual_seed(s)
        net = desc.module().double()
        fn, params = functional(net)
        with torch.no_grad():
            f = net(x)[:, 0]
        nngps.append(torch.outer(f, f).numpy())
        ntks.append(empirical_ntk(fn, params, x, output="trace").numpy())
    return np.array(nngps), np.array(ntks)


@pytest.mark.parametrize(
    ("activation", "depth", "width", "bias"),
    [("relu", 1, 256, 0.0), ("erf", 1, 256, 0.1), ("tanh", 1, 256, 0.1), ("relu", 2, 1024, 0.1)],
)
def test_mlp_kernels_against_monte_carlo(activation: str, depth: int, width: int, bias: float) -> None:
    x = _points(3, 4)
    desc = MLPDescription(
        4, width, depth, weight_var=2.0 if activation == "relu" else 1.5, bias_var=bias, activation=activation
    )
    nngp_s, ntk_s = _mc_mlp(desc, x, seeds=300 if depth == 1 else 150)
    for samples, analytic in [(nngp_s, desc.nngp(x).numpy()), (ntk_s, desc.ntk(x).numpy())]:
        mean = samples.mean(0)
        se = samples.std(0, ddof=1) / math.sqrt(len(samples))
        # One hidden layer: the finite-width expectation equals the limit, so only sampling error
        # (4 standard errors: a false alarm ~1e-4 per entry). Deeper: add an O(1/width) bias allowance.
        bias_allow = 0.0 if depth == 1 else 4.0 / width * np.abs(analytic).max()
        assert np.all(np.abs(mean - analytic) <= 4 * se + bias_allow + 1e-12), (mean, analytic, se)


class _FiniteHyper(nn.Module):
    """An independent finite hypernetwork h(x, z) = g(x; f(z)) written from scratch (NTK parametrization)."""

    def __init__(self, dz: int, d: int, nf: int, ng: int, f_depth: int, g_depth: int, wv: float, bv: float) -> None:
        super().__init__()
        self.wv, self.bv = wv, bv
        self.g_shapes = []
        fan = d
        for _ in range(g_depth):
            self.g_shapes += [(ng, fan), (ng,)]
            fan = ng
        self.g_shapes += [(1, fan), (1,)]
        pg = sum(math.prod(s) for s in self.g_shapes)
        dims = [dz] + [nf] * f_depth + [pg]
        self.f = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            self.f.append(nn.Parameter(torch.randn(b, a, dtype=torch.float64)))
            self.f.append(nn.Parameter(torch.randn(b, dtype=torch.float64)))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # one sample: x [d], z [dz]
        h = z
        n_layers = len(self.f) // 2
        for i in range(n_layers):
            W, b = self.f[2 * i], self.f[2 * i + 1]
            h = math.sqrt(self.wv / W.shape[1]) * W @ h + math.sqrt(self.bv) * b
            if i < n_layers - 1:
                h = torch.relu(h)
        v, out, off = h, x, 0
        for j in range(0, len(self.g_shapes), 2):
            ws, bs = self.g_shapes[j], self.g_shapes[j + 1]
            W = v[off : off + math.prod(ws)].view(ws)
            off += math.prod(ws)
            b = v[off : off + bs[0]]
            off += bs[0]
            out = math.sqrt(self.wv / ws[1]) * W @ out + math.sqrt(self.bv) * b
            if j < len(self.g_shapes) - 2:
                out = torch.relu(out)
        return out[0]


def _explicit_ntk(model: nn.Module, xs: torch.Tensor, zs: torch.Tensor) -> np.ndarray:
    """NTK by an explicit loop of torch.autograd.grad calls: one gradient per point, then dot products."""
    params = list(model.parameters())
    grads = []
    for i in range(xs.shape[0]):
        g = torch.autograd.grad(model(xs[i], zs[i]), params)
        grads.append(torch.cat([t.flatten() for t in g]))
    G = torch.stack(grads)
    return (G @ G.T).detach().numpy()


@pytest.mark.parametrize(("f_depth", "g_depth", "nf", "ng"), [(1, 1, 1024, 256), (2, 1, 512, 128), (1, 2, 512, 48)])
def test_hyper_kernels_against_monte_carlo(f_depth: int, g_depth: int, nf: int, ng: int) -> None:
    x, z = _points(3, 3, seed=1), _points(3, 2, seed=2)
    wv, bv = 2.0, 0.1
    ntks, nngps = [], []
    for s in range(40):
        torch.manual_seed(100 + s)
        model = _FiniteHyper(2, 3, nf, ng, f_depth, g_depth, wv, bv)
        ntks.append(_explicit_ntk(model, x, z))
        with torch.no_grad():
            out = torch.stack([model(x[i], z[i]) for i in range(3)])
        nngps.append(torch.outer(out, out).numpy())
    for samples, analytic in [
        (np.array(ntks), K.hyper_ntk(x, z, f_depth=f_depth, g_depth=g_depth, weight_var=wv, bias_var=bv).numpy()),
        (np.array(nngps), K.hyper_nngp(x, z, f_depth=f_depth, g_depth=g_depth, weight_var=wv, bias_var=bv).numpy()),
    ]:
        mean = samples.mean(0)
        se = samples.std(0, ddof=1) / math.sqrt(len(samples))
        # sampling error (4 SE) plus a finite-width allowance of 4/n_g of the kernel's scale
        allow = 4 * se + 4.0 / ng * np.abs(analytic).max()
        assert np.all(np.abs(mean - analytic) <= allow), (mean, analytic, se)


def test_released_variant_differs_and_rho_one_reduces_to_mlp() -> None:
    x, z = _points(4, 3), _points(4, 2)
    exact = K.hyper_ntk(x, z, f_depth=1, g_depth=2)
    released = K.hyper_ntk(x, z, f_depth=1, g_depth=2, variant="released")
    assert not torch.allclose(exact, released)
    # identical z for every point: Σ_f is a constant c, and the GP kernel is c^(L+1) times g's NNGP
    zc = torch.ones(4, 2, dtype=torch.float64)
    c = float(K.mlp_nngp(zc[:1], depth=1, bias_var=0.0)[0, 0])
    torch.testing.assert_close(K.hyper_nngp(x, zc, f_depth=1, g_depth=2), c**3 * K.mlp_nngp(x, depth=2))


def test_empirical_ntk_methods_agree_with_autograd_loop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    fn, params = functional(net)
    x1, x2 = _points(4, 3), _points(5, 3, seed=1)
    jac = empirical_ntk(fn, params, x1, x2, method="jacobian")
    ntvp = empirical_ntk(fn, params, x1, x2, method="ntvp")
    assert jac.shape == (4, 5, 2, 2)
    torch.testing.assert_close(jac, ntvp, atol=1e-10, rtol=0)
    ref = torch.zeros(4, 5, 2, 2, dtype=torch.float64)
    ps = list(net.parameters())
    for i in range(4):
        for a in range(2):
            gi = torch.autograd.grad(net(x1[i])[a], ps)
            for j in range(5):
                for b in range(2):
                    gj = torch.autograd.grad(net(x2[j])[b], ps)
                    ref[i, j, a, b] = sum((u * v).sum() for u, v in zip(gi, gj))
    torch.testing.assert_close(jac, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(empirical_ntk(fn, params, x1, x2, output="trace"), ref.diagonal(0, 2, 3).sum(-1))
    torch.testing.assert_close(
        empirical_ntk(fn, params, x1, x2, output="diagonal", method="ntvp"), ref.diagonal(0, 2, 3), atol=1e-10, rtol=0
    )


def test_empirical_ntk_of_hypermodel_wrt_hypernetwork() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double())
    hyper = hn.MLPHyperNetwork(2, target.spec, hidden=(16,)).double()
    model = hn.HyperModel(target, hyper)
    fn, params = functional(model)
    assert all(n.startswith("hypernetwork.") for n in params)
    x, z = _points(4, 3), _points(4, 2)
    a = empirical_ntk(fn, params, (x, z), method="jacobian", output="trace")
    b = empirical_ntk(fn, params, (x, z), method="ntvp", output="trace")
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    ps = list(hyper.parameters())
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(model(x[i], z[i]).sum(), ps)]) for i in range(4)]
    G = torch.stack(grads)
    torch.testing.assert_close(a, G @ G.T, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kernel", ["mlp_nngp", "mlp_ntk", "hyper_nngp", "hyper_ntk"])
def test_kernels_symmetric_psd(kernel: str) -> None:
    x, z = _points(30, 5), _points(30, 3)
    if kernel.startswith("mlp"):
        k = getattr(K, kernel)(x, depth=3, bias_var=0.1)
    else:
        k = getattr(K, kernel)(x, z, f_depth=2, g_depth=2, bias_var=0.1)
    torch.testing.assert_close(k, k.T, atol=1e-12, rtol=1e-12)
    assert float(torch.linalg.eigvalsh(k).min()) > -1e-9 * float(k.diagonal().max())


def test_blocking_does_not_change_values() -> None:
    x, z = _points(50, 4), _points(50, 2)
    torch.testing.assert_close(K.mlp_ntk(x, depth=2, block=7), K.mlp_ntk(x, depth=2))
    torch.testing.assert_close(K.hyper_ntk(x, z, block=7), K.hyper_ntk(x, z))


def test_kernel_predict_matches_direct_solve() -> None:
    x = _points(20, 3)
    xt = _points(6, 3, seed=5)
    y = torch.sin(x.sum(1, keepdim=True))
    k = K.mlp_ntk(x, depth=2, bias_var=0.1)
    ks = K.mlp_ntk(xt, x, depth=2, bias_var=0.1)
    kss = K.mlp_ntk(xt, depth=2, bias_var=0.1)
    pred = kernel_predict(k, y, ks, kss)
    direct = ks.numpy() @ np.linalg.solve(k.numpy(), y.numpy())
    np.testing.assert_allclose(pred.mean.numpy(), direct, rtol=1e-8, atol=1e-10)
    cov = kss.numpy() - ks.numpy() @ np.linalg.solve(k.numpy(), ks.numpy().T)
    np.testing.assert_allclose(pred.variance.numpy(), cov, rtol=1e-6, atol=1e-8)
    # gradient flow at time t, against scipy's matrix exponential
    t = 0.3
    expm = scipy.linalg.expm(-t * k.numpy())
    gd = ks.numpy() @ np.linalg.solve(k.numpy(), (np.eye(20) - expm) @ y.numpy())
    np.testing.assert_allclose(kernel_predict(k, y, ks, t=t).mean.numpy(), gd, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(kernel_predict(k, y, ks, t=1e6).mean.numpy(), direct, rtol=1e-6, atol=1e-8)
    assert torch.all(kernel_predict(k, y, ks, t=0.0).mean == 0)


def test_bad_kernel_inputs() -> None:
    x = _points(4, 3)
    with pytest.raises(ValueError, match=r"x2: expected \[N2, 3\], got \[4, 2\]"):
        K.mlp_ntk(x, _points(4, 2))
    with pytest.raises(ValueError, match="activation: unknown 'swish3'"):
        K.mlp_ntk(x, activation="swish3")
    with pytest.raises(ValueError, match="need one z per x"):
        K.hyper_ntk(x, _points(3, 2))
    with pytest.raises(ValueError, match="x2, z2: pass both"):
        K.hyper_ntk(x, _points(4, 2), x)
    with pytest.raises(ValueError, match=r"y_train: expected 4 rows"):
        kernel_predict(K.mlp_ntk(x), torch.zeros(3), K.mlp_ntk(x))


@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
def test_structured_ntk_equals_jacobian(output: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    fn, params = functional(net)
    x1, x2 = _points(7, 5), _points(4, 5, seed=3)
    for a, b in [(x1, x2), (x1, None)]:
        s = empirical_ntk(fn, params, a, b, method="structured", output=output)
        j = empirical_ntk(fn, params, a, b, method="jacobian", output=output)
        torch.testing.assert_close(s, j, atol=1e-10, rtol=0)
    # the NTK-parametrized finite hypernetwork (NTKLinear layers), kernel w.r.t. f's parameters
    desc = hn.kernels.HyperDescription(3, 2, 32, 8, bias_var=0.1)
    model = desc.module().double()
    fn, params = functional(model)
    x, z = _points(5, 3), _points(5, 2, seed=4)
    s = empirical_ntk(fn, params, (x, z), method="structured", output=output)
    j = empirical_ntk(fn, params, (x, z), method="jacobian", output=output)
    torch.testing.assert_close(s, j, atol=1e-10, rtol=0)


def test_structured_falls_back_or_refuses_where_it_does_not_apply() -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4, 1)).double()
    fn, params = functional(conv)
    x = torch.randn(3, 1, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="method='structured' needs"):
        empirical_ntk(fn, params, x, method="structured")
    auto = empirical_ntk(fn, params, x, output="trace")  # auto: falls back to the Jacobian
    torch.testing.assert_close(auto, empirical_ntk(fn, params, x, method="ntvp", output="trace"), atol=1e-10, rtol=0)
    shared = nn.Linear(3, 3).double()  # a layer used twice: no per-call structure, falls back
    twice = nn.Sequential(shared, nn.Tanh(), shared).double()
    fn, params = functional(twice)
    x = _points(4, 3)
    torch.testing.assert_close(
        empirical_ntk(fn, params, x), empirical_ntk(fn, params, x, method="jacobian"), atol=1e-10, rtol=0
    )


def test_symmetric_diagonal_uses_exact_identical_input_rule() -> None:
    """For x = x' the correlation is exactly 1: Ė = 1/2 and E = k/2 for ReLU, so
    k_{l+1} = wv k_l / 2 + bv and T_{l+1} = k_{l+1} + wv/2 · T_l, computed here in plain floats."""
    x = _points(40, 784, seed=7)
    ntk = K.mlp_ntk(x, depth=3, weight_var=2.0, bias_var=0.05, block=16)
    for i in range(40):
        k = 2.0 * float(x[i] @ x[i]) / 784 + 0.05
        t = k
        for _ in range(3):
            k = 2.0 * k / 2 + 0.05
            t = k + t
        assert abs(float(ntk[i, i]) - t) <= 1e-13 * t
