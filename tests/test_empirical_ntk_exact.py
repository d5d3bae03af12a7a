"""Empirical-NTK paths that the method-against-loop tests leave open (found by mutation testing,
docs/testing.md): frozen weights or biases, a layer whose output never reaches the model's output,
a structure that changes with the data, non-symmetric calls with as many rows on both sides, and
the blocks of rows each method actually works on.

Every expected kernel is an explicit autograd loop over the trainable parameters (one
`torch.autograd.grad` per point and output unit), never another method of the library. float64:
the methods and the loop differ by summation order only (~1e-15 on entries of O(1)); 1e-10 is far
below any real error (a missing layer or bias term changes entries by O(0.1)).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn
import hypernet.kernels as K
from hypernet.conditioning import DataEncoder
from hypernet.kernels import autodiff, empirical_ntk, functional, structured
from hypernet.kernels.autodiff import jacobian_peak, ntvp_peak
from hypernet.kernels.empirical import _too_big
from hypernet.kernels.ntk_plan import NTKPlan, Probe, default_budget, fit_square, mib, probe
from test_empirical_ntk import _peak_bytes

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)
METHODS = ["structured", "jacobian", "ntvp"]


def _x(n: int, seed: int, d: int = 4) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _loop(net: nn.Module, x1: Tensor, x2: Tensor) -> Tensor:
    """`Θ[i, j, a, b] = <∂f_a(x1_i)/∂θ, ∂f_b(x2_j)/∂θ>` over the parameters that require grad."""
    params = [p for p in net.parameters() if p.requires_grad]

    def grads(x: Tensor) -> Tensor:  # [N, O, P]
        out = []
        for i in range(x.shape[0]):
            y = net(x[i : i + 1])[0]
            per_unit = []
            for a in range(y.shape[0]):
                g = torch.autograd.grad(y[a], params, retain_graph=True, allow_unused=True)
                per_unit.append(
                    torch.cat([(torch.zeros_like(p) if d is None else d).flatten() for d, p in zip(g, params)])
                )
            out.append(torch.stack(per_unit))
        return torch.stack(out)

    return torch.einsum("iap,jbp->ijab", grads(x1), grads(x2))


def _all_outputs(net: nn.Module, x1: Tensor, x2: Tensor | None, method: str) -> None:
    """Every output form of `method` against the loop, for x2 given and for x2 = None."""
    fn, params = functional(net)
    ref = _loop(net, x1, x1 if x2 is None else x2)
    full = empirical_ntk(fn, params, x1, x2, method=method)
    torch.testing.assert_close(full, ref, **TOL)
    diag = ref.diagonal(0, 2, 3)
    torch.testing.assert_close(empirical_ntk(fn, params, x1, x2, method=method, output="diagonal"), diag, **TOL)
    torch.testing.assert_close(empirical_ntk(fn, params, x1, x2, method=method, output="trace"), diag.sum(-1), **TOL)


class _Unused(nn.Module):
    """A dense layer (`aux`) that is called but whose output never reaches the model's output,
    between two that do: its parameters have zero gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.aux, self.head = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.body(x))
        self.aux(h)
        return self.head(h)


def _frozen_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    net[0].weight.requires_grad_(False)  # only its bias counts
    net[2].bias.requires_grad_(False)  # only its weight counts
    return net


# Catches (structured method): a frozen weight's or bias's term added anyway (or its zero Gram matrix
# built with the wrong shape), a layer whose output does not reach the model's output ending the
# sum over layers (`break` for `continue`) or failing its gradient (`allow_unused=False`).
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("which", ["frozen", "unused"])
def test_frozen_parameters_and_an_unused_layer(method: str, which: str) -> None:
    if which == "frozen":
        net = _frozen_net()
        fn, params = functional(net)
        assert set(params) == {"0.bias", "2.weight", "4.weight", "4.bias"}
    else:
        torch.manual_seed(2)
        net = _Unused().double()
    x1, x2 = _x(5, 1), _x(3, 2)
    for other in (x2, None):
        _all_outputs(net, x1, other, method)


# Catches: a non-symmetric call treated as symmetric when a block of x1 and one of x2 have the same
# row range (both sides' forward pass taken from x1): x1 and x2 of 4 rows each, one block.
@pytest.mark.parametrize("method", METHODS)
def test_x2_as_many_rows_as_x1(method: str) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 2)).double()
    _all_outputs(net, _x(4, 4), _x(4, 5), method)


class _Switch(nn.Module):
    """On rows holding a value above 100, calls `inner` twice (`"twice"`), returns `[N, 1, 1]`
    (`"3d"`) or a tuple (`"tuple"`): a structure the two-row probe on ordinary rows cannot see."""

    def __init__(self, change: str) -> None:
        super().__init__()
        self.change = change
        self.inner, self.head = nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inner(x)
        big = bool((x > 100).any())
        if big and self.change == "twice":
            h = self.inner(torch.tanh(h))
        y = self.head(h)
        if big and self.change == "tuple":
            return (y,)  # type: ignore[return-value]
        return y[:, :, None] if big and self.change == "3d" else y


# Catches: a data-dependent change found in only one of the two sides of a block not reported, the
# report's text (the output's shape), and the probe checking other rows than the first two (a
# change in row 0 is refused before any work, one in row 2 only when its block runs).
@pytest.mark.parametrize(
    ("change", "message", "refused"),
    [
        ("twice", r"layer inner is not called once", r"^method='structured' needs an nn.Module"),
        ("3d", r"the output is not \[N, O\] \(got \[3, 1, 1\]\)", r"^f: expected model outputs \[N, O\]"),
        ("tuple", r"the output is not \[N, O\] \(got \[\]\)", r"^f: expected the model to return a Tensor"),
    ],
)
def test_structure_that_changes_with_the_data_is_reported(change: str, message: str, refused: str) -> None:
    net = _Switch(change).double()
    x1, x2 = _x(3, 6), _x(3, 7)
    x2[2, 0] = 1000.0  # past the two rows the probe checks
    for a, b in ((x1, x2), (x2, x1)):
        with pytest.raises(RuntimeError, match=rf"^structured empirical NTK: {message}"):
            empirical_ntk(net, a, b, method="structured")
    x2[0, 0] = 1000.0
    with pytest.raises((ValueError, TypeError), match=refused):
        empirical_ntk(net, x2, x1, method="structured")


# Catches: a dense layer applied to [N, T, F] rather than [N, features] rows taken for one the
# structured formula covers (the check on the layer input's dimensions weakened).
def test_dense_layer_on_three_dimensional_rows_is_not_structured() -> None:
    torch.manual_seed(7)
    net = nn.Sequential(nn.Unflatten(1, (2, 2)), nn.Linear(2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(6, 1)).double()
    with pytest.raises(ValueError, match=r"layer 1 is not called once on \[N, features\] rows"):
        empirical_ntk(net, _x(3, 8), method="structured")
    x1, x2 = _x(3, 8), _x(2, 9)
    torch.testing.assert_close(empirical_ntk(net, x1, x2), _loop(net, x1, x2), **TOL)  # auto falls back


# Catches (structured, one output per unit at a time): the accumulator for "diagonal" shaped after
# the second layer's Gram matrix, which a model with a single dense layer does not have.
def test_single_dense_layer() -> None:
    torch.manual_seed(8)
    net = nn.Linear(4, 3).double()
    for other in (_x(3, 10), None):
        _all_outputs(net, _x(5, 11), other, "structured")


# Catches: the blocks of `structured_ntk` taken with the wrong sizes (rows of x1 in blocks of x2's
# size), the symmetric case computing blocks below the diagonal or not mirroring them, and a wrong
# `same` (a separate forward pass for a diagonal block is harmless, x1's pass reused for x2 is not).
def test_structured_blocks_are_the_ones_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    fn, params = functional(net)
    layers = structured.eligible(net, params)
    assert isinstance(layers, dict)
    seen: list[int] = []
    real = structured._forward

    def spy(model: nn.Module, p: dict[str, Tensor], ly: dict[str, structured.Layer], x: Tensor) -> object:
        seen.append(x.shape[0])
        return real(model, p, ly, x)

    monkeypatch.setattr(structured, "_forward", spy)
    x1, x2 = _x(5, 8), _x(3, 9)
    out = torch.empty(5, 3, 2, 2, dtype=torch.float64)
    structured.structured_ntk(net, params, layers, x1, x2, "full", (2, 3), out)
    assert seen == [2, 3, 2, 3, 1, 3]  # per block of x1 rows (2, 2, 1): its pass, then x2's 3 rows
    torch.testing.assert_close(out, _loop(net, x1, x2), **TOL)
    seen.clear()
    sym = torch.empty(5, 5, 2, 2, dtype=torch.float64)
    structured.structured_ntk(net, params, layers, x1, None, "full", (2, 2), sym)
    # blocks (0,0) (0,1) (0,2) (1,1) (1,2) (2,2): one pass on the diagonal, two off it
    assert seen == [2, 2, 2, 2, 1, 2, 2, 1, 1]
    torch.testing.assert_close(sym, _loop(net, x1, x1), **TOL)


# Catches: the probe miscounting the outputs, the output's item size or dtype, or the parameters'
# bytes (4·6 + 6 + 6·3 + 3 float64 numbers), which every peak estimate starts from.
def test_probe_counts_outputs_and_dtype() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    fn, params = functional(net)
    p = probe(fn, params, _x(5, 10))
    assert (p.n_outputs, p.itemsize, p.dtype) == (3, 8, torch.float64)
    assert p.param_bytes == 8 * (4 * 6 + 6 + 6 * 3 + 3)


# Catches: a dropped or changed term in any method's peak estimate (`max_memory` planning). The
# expected values are the terms their docstrings list, written out for one small made-up probe:
# O = 3 outputs, 8-byte items, 1000 bytes per extra row, 100 batch-independent, 50 of parameters;
# a result of 5 x 7 rows; blocks of 2 x 3 rows; P = 40 parameters; two dense layers 4 -> 6 -> 3.
def test_peak_estimates_are_the_documented_sums() -> None:
    pr = Probe(3, 8, 1000, 100, 50, torch.float64, torch.device("cpu"))
    o, item, n1, n2, r, c, n_params = 3, 8, 5, 7, 2, 3, 40
    pairs = {"full": o * o, "trace": 1, "diagonal": o}  # numbers per (row, row) pair of the result
    layers = {
        "a": structured.Layer(True, True, 1.0, 1.0, 4, 6),
        "b": structured.Layer(True, False, 1.0, 1.0, 6, 3),
    }
    for output, per in pairs.items():
        result = item * n1 * n2 * per
        # structured: per row its graph, both layers' inputs and outputs, and δ of one unit (all O
        # for "full") at every layer twice; per pair each layer's Gram matrix and two products
        kept = o if output == "full" else 1
        row = 1000 + item * ((4 + 6) + (6 + 3) + 2 * kept * (6 + 3))
        pair = item * (2 + 2 * per)
        want = result + 2 * (100 + 50) + (r + c) * row + r * c * pair
        assert structured.peak(pr, layers, output, n1, n2, r, c) == want, output
        # jacobian: per row its Jacobian [O, P] and O gradients' graphs, twice; per pair one
        # result-sized contraction temporary
        row = 2 * o * (item * n_params + 1000)
        want = result + 2 * o * 100 + 50 + (r + c) * row + r * c * item * per
        assert jacobian_peak(pr, n_params, output, n1, n2, r, c) == want, output
        # ntvp with k = 4 products at once: the vjp graph at the c rows, and per product a tangent
        # [P] twice, the activations of r + c rows, its column [r, O] twice, the fixed memory twice
        per_product = 2 * item * n_params + (r + c) * 1000 + 2 * item * r * o + 2 * 100
        want = result + 50 + 100 + c * 1000 + 4 * per_product
        assert ntvp_peak(pr, n_params, output, n1, n2, r, c, 4) == want, output


# Catches: an estimate that is not an upper bound of the memory actually used (a budget could then
# be exceeded), or one so loose that blocks are needlessly small. Measured peak of live torch CPU
# memory (the profiler, as in test_empirical_ntk.py) against the plan's estimate, unblocked and
# under half the budget: measured ratios are 1.1 to 4.0; the bounds are 1 and 6.
@pytest.mark.parametrize("method", METHODS)
def test_peak_estimate_bounds_the_measured_peak(method: str) -> None:

    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x1, x2 = _x(60, 11, 6), _x(40, 12, 6)
    for output in ("full", "trace", "diagonal"):
        for other in (x2, None):
            whole = K.plan_empirical_ntk(net, x1, other, method=method, output=output)
            for budget in (None, whole.peak_bytes // 2):
                plan = K.plan_empirical_ntk(net, x1, other, method=method, output=output, max_memory=budget)
                measured = _peak_bytes(
                    lambda b=budget, o=other, out=output: K.empirical_ntk(
                        net, x1, o, method=method, output=out, max_memory=b
                    )
                )
                assert measured <= plan.peak_bytes <= 6 * measured, (output, other is None, budget, plan, measured)


# Catches: the plan's description (logged at INFO by every empirical_ntk call) with a field left
# out or mislabelled, and `mib` rounding to the wrong unit.
def test_plan_description_and_its_log_line(caplog: pytest.LogCaptureFixture) -> None:
    assert [mib(n) for n in (0, 1023, 1024, 1536, 2**20, 5 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "1.0 MiB",
        "5.0 GiB",
    ]
    plan = NTKPlan("ntvp", "requested", "full", (5, 3, 3, 3), 40, (2, 3), 4, 3 * 2**20 + 2**19, 2**30)
    assert str(plan) == (
        "method='ntvp' (requested); output 'full' [5, 3, 3, 3], 40 parameters, blocks of 2x3 rows, "
        "4 NTK-vector products at once; estimated peak 3.5 MiB of max_memory 1.0 GiB"
    )
    no_products = NTKPlan("jacobian", "r", "trace", (5, 3), 40, (5, 3), None, 2048, 4096)
    assert str(no_products) == (
        "method='jacobian' (r); output 'trace' [5, 3], 40 parameters, blocks of 5x3 rows; "
        "estimated peak 2.0 KiB of max_memory 4.0 KiB"
    )
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    with caplog.at_level("INFO", logger="hypernet.kernels"):
        empirical_ntk(net, _x(3, 12), method="jacobian", output="trace", max_memory=2**30)
    plan = K.plan_empirical_ntk(net, _x(3, 12), method="jacobian", output="trace", max_memory=2**30)
    assert [r.getMessage() for r in caplog.records] == [f"empirical_ntk: {plan}"]
    assert str(plan).startswith("method='jacobian' (requested); output 'trace' [3, 3], 37 parameters, blocks of 3x3")


# Catches: the too-small-budget error saying the wrong thing: which part does not fit (the result
# itself only when it is larger than the budget), the hint to use output='trace' only for forms
# that have output axes, and the figures it quotes.
def test_too_small_budget_message() -> None:
    assert str(_too_big("jacobian", 1000, 3000, 9000, 2000, (5, 3, 2, 2))) == (
        "max_memory: 1000 B is too small for the 'jacobian' empirical NTK (the result alone does not fit): "
        "estimated peak 2.9 KiB with 1x1-row blocks (2.0 KiB is the result [5, 3, 2, 2] itself; 8.8 KiB "
        "unblocked). Raise max_memory or use fewer points, or output='trace'"
    )
    assert str(_too_big("ntvp", 1000, 3000, 9000, 1000, (5, 3))) == (
        "max_memory: 1000 B is too small for the 'ntvp' empirical NTK (not even one block fits): estimated "
        "peak 2.9 KiB with 1x1-row blocks (1000 B is the result [5, 3] itself; 8.8 KiB unblocked). Raise "
        "max_memory or use fewer points"
    )
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    with pytest.raises(ValueError, match=r"\(the result alone does not fit\).*fewer points$"):
        empirical_ntk(net, _x(30, 13), method="jacobian", output="trace", max_memory=30 * 30 * 8 - 1)


# Catches: a HyperModel whose conditioner reads the batch itself (DataEncoder without a condition)
# handed something else than x, so the kernel w.r.t. the hypernetwork and conditioner parameters
# would not be that of model(x). Reference: the autograd loop over exactly those parameters.
@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_hypermodel_with_a_data_encoder(method: str) -> None:
    torch.manual_seed(11)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double())
    hyper = hn.MLPHyperNetwork(2, target.spec, hidden=(5,)).double()
    model = hn.HyperModel(target, hyper, DataEncoder(nn.Linear(4, 2).double(), 2))
    x1, x2 = _x(3, 14), _x(2, 15)
    params = [p for n, p in model.named_parameters() if n.startswith(("hypernetwork.", "conditioner."))]

    def grads(x: Tensor) -> Tensor:  # [N, O, P]: each row alone, so it gets its own weights
        rows = []
        for i in range(x.shape[0]):
            y = model(x[i : i + 1])[0]
            rows.append(
                torch.stack(
                    [
                        torch.cat([g.flatten() for g in torch.autograd.grad(y[a], params, retain_graph=True)])
                        for a in range(2)
                    ]
                )
            )
        return torch.stack(rows)

    ref = torch.einsum("iap,jbp->ijab", grads(x1), grads(x2))
    torch.testing.assert_close(empirical_ntk(model, x1, x2, method=method), ref, **TOL)


# Catches: a `module` attribute that is not an nn.Module taken for one (the structured path would
# then fail on it); such a function is a plain function: a warning, and the Jacobian method.
def test_function_with_a_module_attribute_that_is_not_a_module() -> None:
    torch.manual_seed(12)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    fn, params = functional(net)

    def plain(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return fn(p, x)

    plain.module = "not a module"  # type: ignore[attr-defined]
    x1 = _x(3, 16)
    with pytest.warns(UserWarning, match="plain function"):
        got = empirical_ntk(plain, params, x1)
    torch.testing.assert_close(got, _loop(net, x1, x1), **TOL)


# Catches: the number of NTK-vector products run at once not "as many as the budget allows, at
# least 1, at most a block's worth of columns" (c·O for "full", c // O otherwise): unbounded, the
# whole block is one group up to that cap; with a budget of the fixed part plus 2.5 (1.5) products'
# worth, exactly 2 (1) run at once in an unblocked plan.
@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
def test_ntvp_runs_as_many_products_as_fit(output: str) -> None:
    torch.manual_seed(13)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    fn, params = functional(net)
    x1, x2 = _x(12, 17), _x(10, 18)
    n_params = sum(p.numel() for p in params.values())
    whole = K.plan_empirical_ntk(net, x1, x2, method="ntvp", output=output)
    assert whole.block == (12, 10) and whole.products == (10 * 3 if output == "full" else 10 // 3)
    pr = probe(fn, params, x1)
    base = ntvp_peak(pr, n_params, output, 12, 10, 12, 10, 0)
    per = ntvp_peak(pr, n_params, output, 12, 10, 12, 10, 1) - base
    plan = K.plan_empirical_ntk(net, x1, x2, method="ntvp", output=output, max_memory=base + 2 * per + per // 2)
    assert plan.block == (12, 10) and plan.products == 2
    plan = K.plan_empirical_ntk(net, x1, x2, method="ntvp", output=output, max_memory=base + per + per // 2)
    assert plan.block == (12, 10) and plan.products == 1
    # 4 columns and O = 3: a cap of 4 // 3 = 1 product for "trace" / "diagonal", 12 for "full"
    few = K.plan_empirical_ntk(net, x1, _x(4, 21), method="ntvp", output=output)
    assert few.products == (12 if output == "full" else 1)


# Catches (jacobian, ntvp): blocks of x1 taken with x2's block size, a symmetric kernel computing
# blocks below the diagonal (or not mirroring them), a row block's Jacobians not reused across its
# blocks, or recomputed on a diagonal block. Seen through the row slices each method takes.
@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_autodiff_blocks_are_the_ones_asked_for(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(14)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    fn, params = functional(net)
    seen: list[int] = []
    real = autodiff.rows

    def spy(inputs: Tensor, index: slice) -> Tensor:
        out = real(inputs, index)
        seen.append(out.shape[0])
        return out

    monkeypatch.setattr(autodiff, "rows", spy)
    x1, x2 = _x(5, 19), _x(6, 20)

    def run(other: Tensor | None, block: tuple[int, int], shape: tuple[int, ...]) -> Tensor:
        out = torch.empty(shape, dtype=torch.float64)
        if method == "jacobian":
            return autodiff.jacobian_ntk(fn, params, x1, other, "full", block, out)
        return autodiff.ntvp_ntk(fn, params, x1, other, "full", block, 3, out)

    got = run(x2, (2, 3), (5, 6, 2, 2))
    torch.testing.assert_close(got, _loop(net, x1, x2), **TOL)
    if method == "jacobian":  # x1's rows once per row block, x2's per block
        assert seen == [2, 3, 3, 2, 3, 3, 1, 3, 3]
    else:  # both sides per block
        assert seen == [2, 3, 2, 3, 2, 3, 2, 3, 1, 3, 1, 3]
    seen.clear()
    got = run(None, (2, 2), (5, 5, 2, 2))
    torch.testing.assert_close(got, _loop(net, x1, x1), **TOL)
    # blocks (0,0) (0,1) (0,2) (1,1) (1,2) (2,2) only; a diagonal block reuses its row block
    if method == "jacobian":
        assert seen == [2, 2, 1, 2, 1, 1]
    else:
        assert seen == [2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 1, 1]


# Catches: a tensor made on torch's default device instead of the data's (a `device=` dropped), and
# a bug this test found: ntvp indexed its one-hot seeds with `torch.arange` on the default device, so
# under `torch.device("meta")` the seeds stayed zero and the kernel came out wrong, silently.
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_the_inputs_device_whatever_the_default(method: str) -> None:
    torch.manual_seed(15)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x1, x2 = _x(3, 22), _x(2, 23)
    ref = _loop(net, x1, x2)
    with torch.device("meta"):
        got = {out: empirical_ntk(net, x1, x2, method=method, output=out) for out in ("full", "trace", "diagonal")}
    assert all(g.device.type == "cpu" for g in got.values())
    torch.testing.assert_close(got["full"], ref, **TOL)
    torch.testing.assert_close(got["diagonal"], ref.diagonal(0, 2, 3), **TOL)
    torch.testing.assert_close(got["trace"], ref.diagonal(0, 2, 3).sum(-1), **TOL)


# Catches: `plan_empirical_ntk` not passing on `chunk` or a keyword `x2` (the plan it returns must be
# the one `empirical_ntk` runs with the same arguments).
def test_plan_takes_chunk_and_keyword_x2() -> None:
    torch.manual_seed(16)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    plan = K.plan_empirical_ntk(net, _x(3, 24), x2=_x(7, 25), method="ntvp", output="trace", chunk=2)
    assert plan.shape == (3, 7) and plan.products == 2


# Catches: `fit_square` not returning the largest square block that fits (an off-by-one in its
# bisection, `<` for `<=`, a 2x1 first check), against a brute-force search over every size.
def test_fit_square_is_the_largest_block_that_fits() -> None:
    def peak(r: int, c: int) -> int:
        return 100 + 7 * (r + c) + 3 * r * c

    for n1, n2 in ((9, 4), (4, 9), (6, 6), (1, 5)):
        for budget in range(100, peak(n1, n2) + 2):
            fits = [s for s in range(1, max(n1, n2) + 1) if peak(min(s, n1), min(s, n2)) <= budget]
            want = (min(max(fits), n1), min(max(fits), n2)) if fits else None
            assert fit_square(n1, n2, peak, budget) == want, (n1, n2, budget)


# Catches: the probe using other rows than the first one or two (x of exactly 2 rows measured like
# x of 5), or splitting a single row's memory wrongly: with one row there is no second to compare
# with, so all of it counts per row (row_bytes = the 2-row probe's row_bytes + fixed_bytes).
def test_probe_rows_and_fixed_memory() -> None:
    torch.manual_seed(17)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    fn, params = functional(net)
    x = _x(5, 26)
    five, two, one = probe(fn, params, x), probe(fn, params, x[:2]), probe(fn, params, x[:1])
    assert five.row_bytes > 0 and (two.row_bytes, two.fixed_bytes) == (five.row_bytes, five.fixed_bytes)
    assert (one.row_bytes, one.fixed_bytes) == (five.row_bytes + five.fixed_bytes, 0)


# Catches: the CPU default budget other than a quarter of the physical memory, or its fallback other
# than 4 GiB where the system does not say.
def test_default_budget_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert default_budget(cpu) == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4

    def unknown(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", unknown)
    assert default_budget(cpu) == 4 * 2**30
