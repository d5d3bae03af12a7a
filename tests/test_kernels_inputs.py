"""Every kernel function refuses a bad argument with one clear error that names it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import hypernet as hn

K = hn.kernels


def _x(n: int = 4, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _with(t: torch.Tensor, index: tuple[int, int], value: float) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


X, Z = _x(), _x(4, 2, seed=1)
KERN = K.mlp_ntk(X, depth=2, bias_var=0.1)
Y = torch.ones(4, 1, dtype=torch.float64)

BAD: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    # analytic MLP kernels (both public names share one body; both are exercised)
    ("block=-1", lambda: K.mlp_ntk(X, block=-1), ValueError, r"^block: must be >= 1, got -1"),
    ("block=0", lambda: K.mlp_nngp(X, block=0), ValueError, r"^block: must be >= 1, got 0"),
    ("block=2.5", lambda: K.mlp_ntk(X, block=2.5), TypeError, r"^block: expected an int"),
    ("mlp_kernel block=0", lambda: K.mlp_kernel(X, block=0), ValueError, r"^block: must be >= 1, got 0"),
    ("weight_var<0", lambda: K.mlp_ntk(X, weight_var=-1.0), ValueError, r"^weight_var: must be a finite number >= 0"),
    ("bias_var nan", lambda: K.mlp_nngp(X, bias_var=math.nan), ValueError, r"^bias_var: must be a finite"),
    ("bias_var inf", lambda: K.mlp_kernel(X, bias_var=math.inf), ValueError, r"^bias_var: must be a finite"),
    ("depth<0", lambda: K.mlp_ntk(X, depth=-1), ValueError, r"^depth: must be >= 0, got -1"),
    ("depth float", lambda: K.mlp_ntk(X, depth=1.0), TypeError, r"^depth: expected an int"),
    ("depth bool", lambda: K.mlp_nngp(X, depth=True), TypeError, r"^depth: expected an int"),
    ("d=0", lambda: K.mlp_ntk(torch.zeros(4, 0)), ValueError, r"^x1: needs d >= 1 columns"),
    ("x1 1-D", lambda: K.mlp_ntk(torch.zeros(4)), ValueError, r"^x1: expected a Tensor \[N1, d\]"),
    ("x1 list", lambda: K.mlp_ntk([[1.0]]), TypeError, r"^x1: expected a Tensor"),
    ("x1 bool", lambda: K.mlp_ntk(X > 0), TypeError, r"^x1: expected a real-valued Tensor, got torch.bool"),
    ("x1 complex", lambda: K.mlp_ntk(X.to(torch.complex128)), TypeError, r"^x1: expected a real-valued Tensor"),
    ("x2 1-D", lambda: K.mlp_ntk(X, torch.zeros(4)), ValueError, r"^x2: expected a Tensor \[N2, d\], got shape \[4\]"),
    ("x 1-D", lambda: K.nngp_diagonal(torch.zeros(4), 1), ValueError, r"^x: expected a Tensor \[N, d\], got shape"),
    ("weight_var bool", lambda: K.mlp_ntk(X, weight_var=True), TypeError, r"^weight_var: expected a real number"),
    ("bias_var str", lambda: K.mlp_nngp(X, bias_var="0.1"), TypeError, r"^bias_var: expected a real number"),
    ("x1 nan", lambda: K.mlp_ntk(_with(X, (2, 1), math.nan)), ValueError, r"^x1: contains 1 non-finite"),
    ("x2 inf", lambda: K.mlp_nngp(X, _with(X, (0, 0), math.inf)), ValueError, r"^x2: contains 1 non-finite"),
    ("x2 dims", lambda: K.mlp_ntk(X, _x(4, 2)), ValueError, r"^x2: expected \[N2, 3\], got \[4, 2\]"),
    ("dtype int", lambda: K.mlp_ntk(X, dtype=torch.int64), TypeError, r"^dtype: expected a floating"),
    ("activation", lambda: K.mlp_ntk(X, activation="swish3"), ValueError, r"^activation: unknown 'swish3'"),
    ("diag nan", lambda: K.nngp_diagonal(_with(X, (1, 1), math.nan), 1), ValueError, r"^x: contains 1"),
    ("diag depth", lambda: K.nngp_diagonal(X, -2), ValueError, r"^depth: must be >= 0"),
    # hypernetwork kernels
    ("f_depth<0", lambda: K.hyper_ntk(X, Z, f_depth=-1), ValueError, r"^f_depth: must be >= 0"),
    ("g_depth<0", lambda: K.hyper_nngp(X, Z, g_depth=-1), ValueError, r"^g_depth: must be >= 0"),
    ("hyper block", lambda: K.hyper_ntk(X, Z, block=0), ValueError, r"^block: must be >= 1"),
    ("hyper wv", lambda: K.hyper_nngp(X, Z, weight_var=-0.5), ValueError, r"^weight_var: must be a finite"),
    ("hyper variant", lambda: K.hyper_ntk(X, Z, variant="paper"), ValueError, r"^variant: expected one of"),
    ("z1 nan", lambda: K.hyper_ntk(X, _with(Z, (3, 0), math.nan)), ValueError, r"^z1: contains 1 non-finite"),
    ("z1 d=0", lambda: K.hyper_ntk(X, torch.zeros(4, 0)), ValueError, r"^z1: needs d >= 1"),
    ("z2 dims", lambda: K.hyper_ntk(X, Z, X, _x(4, 3)), ValueError, r"^z2: expected \[N2, 2\], got \[4, 3\]"),
    ("z rows", lambda: K.hyper_nngp(X, _x(3, 2)), ValueError, r"^z1/z2: need one z per x"),
    ("z1 rows only", lambda: K.hyper_ntk(X, _x(3, 2), X, Z), ValueError, r"^z1/z2: need one z per x"),
    ("z2 rows only", lambda: K.hyper_ntk(X, Z, X, _x(3, 2)), ValueError, r"^z1/z2: need one z per x"),
    ("hyper activation", lambda: K.hyper_ntk(X, Z, activation="nope"), ValueError, r"^activation: unknown"),
    # descriptions
    ("desc width", lambda: K.MLPDescription(3, 0, 1), ValueError, r"^width: must be >= 1"),
    ("desc in", lambda: K.MLPDescription(0, 8, 1), ValueError, r"^in_features: must be >= 1"),
    ("desc out", lambda: K.MLPDescription(3, 8, 1, out_features=0), ValueError, r"^out_features: must be >= 1"),
    ("desc depth", lambda: K.MLPDescription(3, 8, -1), ValueError, r"^depth: must be >= 0"),
    ("desc wv", lambda: K.MLPDescription(3, 8, 1, weight_var=-2.0), ValueError, r"^weight_var: must be"),
    ("desc act", lambda: K.MLPDescription(3, 8, 1, activation="nope"), ValueError, r"^activation: unknown"),
    # kernel_predict
    (
        "k_train upper nan",
        lambda: K.kernel_predict(_with(KERN, (0, 3), math.nan), Y, KERN),
        ValueError,
        r"^k_train: contains 1",
    ),
    (
        "k_train lower nan",
        lambda: K.kernel_predict(_with(KERN, (3, 0), math.nan), Y, KERN),
        ValueError,
        r"^k_train: contains 1",
    ),
    ("k_train list", lambda: K.kernel_predict([[1.0]], Y, KERN), TypeError, r"^k_train: expected a Tensor, got list"),
    ("y_train list", lambda: K.kernel_predict(KERN, [1.0] * 4, KERN), TypeError, r"^y_train: expected a Tensor, got"),
    ("k_test_train list", lambda: K.kernel_predict(KERN, Y, 1.0), TypeError, r"^k_test_train: expected a Tensor, got"),
    ("k_test list", lambda: K.kernel_predict(KERN, Y, KERN, [1.0]), TypeError, r"^k_test: expected a Tensor, got list"),
    ("k_train square", lambda: K.kernel_predict(KERN[:3], Y, KERN), ValueError, r"^k_train: expected a square"),
    (
        "y_train nan",
        lambda: K.kernel_predict(KERN, _with(Y, (1, 0), math.nan), KERN),
        ValueError,
        r"^y_train: contains",
    ),
    ("y_train rows", lambda: K.kernel_predict(KERN, torch.zeros(3), KERN), ValueError, r"^y_train: expected 4 rows"),
    (
        "k_test_train nan",
        lambda: K.kernel_predict(KERN, Y, _with(KERN, (2, 2), math.inf)),
        ValueError,
        r"^k_test_train: contains",
    ),
    (
        "k_test_train cols",
        lambda: K.kernel_predict(KERN, Y, KERN[:, :3]),
        ValueError,
        r"^k_test_train: expected \[M, 4\]",
    ),
    (
        "k_test nan",
        lambda: K.kernel_predict(KERN, Y, KERN, _with(KERN, (0, 1), math.nan)),
        ValueError,
        r"^k_test: contains",
    ),
    ("k_test shape", lambda: K.kernel_predict(KERN, Y, KERN, KERN[:2]), ValueError, r"^k_test: expected \[4, 4\]"),
    ("t<0", lambda: K.kernel_predict(KERN, Y, KERN, t=-0.5), ValueError, r"^t: must be a finite number >= 0"),
    ("t nan", lambda: K.kernel_predict(KERN, Y, KERN, t=math.nan), ValueError, r"^t: must be"),
    ("lr=0", lambda: K.kernel_predict(KERN, Y, KERN, t=1.0, lr=0.0), ValueError, r"^lr: must be a finite number > 0"),
    ("diag_reg<0", lambda: K.kernel_predict(KERN, Y, KERN, diag_reg=-1e-3), ValueError, r"^diag_reg: must be"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_argument_is_refused_by_name(call: Callable[[], Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_valid_edge_values_still_work() -> None:
    """The boundaries the checks allow: depth 0 (a linear model), zero variances, t = 0 and t = inf."""
    lin = K.mlp_ntk(X, depth=0, weight_var=1.0, bias_var=0.0)
    torch.testing.assert_close(lin, X @ X.T / 3)  # depth 0: NTK = NNGP = the scaled linear kernel
    assert torch.all(K.mlp_nngp(X, weight_var=0.0, bias_var=0.25) == 0.25)  # constant output b
    assert torch.all(K.kernel_predict(KERN, Y, KERN, t=0.0).mean == 0)
    torch.testing.assert_close(K.kernel_predict(KERN, Y, KERN, t=math.inf).mean, K.kernel_predict(KERN, Y, KERN).mean)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()


EMPIRICAL_BAD: list[tuple[str, Callable[[nn.Module], Any], type[Exception], str]] = [
    ("x1 nan", lambda m: K.empirical_ntk(m, _with(X, (0, 2), math.nan)), ValueError, r"^x1: contains 1 non-finite"),
    ("x2 inf", lambda m: K.empirical_ntk(m, X, _with(X, (1, 1), -math.inf)), ValueError, r"^x2: contains 1"),
    ("x2 features", lambda m: K.empirical_ntk(m, X, _x(4, 2)), ValueError, r"^x2: expected the structure of x1"),
    ("x1 rows", lambda m: K.empirical_ntk(m, (X, _x(3, 2))), ValueError, r"^x1: every tensor needs the same leading N"),
    ("x1 empty", lambda m: K.empirical_ntk(m, X[:0]), ValueError, r"^x1: needs at least one row"),
    ("x1 list", lambda m: K.empirical_ntk(m, [1.0, 2.0]), TypeError, r"^x1: expected a Tensor"),
    ("method", lambda m: K.empirical_ntk(m, X, method="fast"), ValueError, r"^method: expected one of"),
    ("output", lambda m: K.empirical_ntk(m, X, output="sum"), ValueError, r"^output: expected one of"),
    ("chunk=0", lambda m: K.empirical_ntk(m, X, method="ntvp", chunk=0), ValueError, r"^chunk: must be >= 1"),
    ("max_memory=0", lambda m: K.empirical_ntk(m, X, max_memory=0), ValueError, r"^max_memory: must be >= 1"),
    ("max_memory float", lambda m: K.empirical_ntk(m, X, max_memory=1e9), TypeError, r"^max_memory: expected an int"),
    ("params", lambda m: K.empirical_ntk(K.functional(m)[0], [1], X), TypeError, r"^params: expected a dict"),
    ("f", lambda m: K.empirical_ntk(3, X), TypeError, r"^f: expected an nn.Module"),
    ("x2 twice", lambda m: K.empirical_ntk(m, X, X, x2=X), TypeError, r"^x2: given both"),
    ("too many", lambda m: K.empirical_ntk(m, X, X, X), TypeError, r"expected 1 or 2 inputs after the model"),
    ("frozen", lambda m: K.empirical_ntk(m.requires_grad_(False), X), ValueError, r"^params: no \(trainable\) param"),
    (
        "outputs 3-D",
        lambda m: K.empirical_ntk(nn.Conv1d(1, 1, 2).double(), X[:, None]),
        ValueError,
        r"^f: expected model outputs",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [b[1:] for b in EMPIRICAL_BAD], ids=[b[0] for b in EMPIRICAL_BAD]
)
def test_empirical_ntk_bad_argument_is_refused_by_name(
    call: Callable[[nn.Module], Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        call(_net())


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp"])
def test_empirical_ntk_too_small_budget_names_max_memory_and_the_estimate(method: str) -> None:
    with pytest.raises(ValueError, match=r"^max_memory: 1000 B is too small for the .* estimated peak \d"):
        K.empirical_ntk(_net(), X, method=method, max_memory=1000)
