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

import pytest
import torch
from torch import Tensor, nn

from hypernet.kernels import empirical_ntk, functional, structured
from hypernet.kernels.ntk_plan import probe

TOL = dict(atol=1e-10, rtol=1e-10)
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
    """Calls `inner` twice on rows holding a value above 100: a structure the two-row probe on
    ordinary rows cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.head = nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inner(x)
        if bool((x > 100).any()):
            h = self.inner(torch.tanh(h))
        return self.head(h)


# Catches: the data-dependent change found in only one of the two sides of a block not reported.
def test_structure_that_changes_with_the_data_is_reported() -> None:
    net = _Switch().double()
    x1, x2 = _x(3, 6), _x(3, 7)
    x2[2, 0] = 1000.0  # past the two rows the probe checks
    for a, b in ((x1, x2), (x2, x1)):
        with pytest.raises(RuntimeError, match=r"^structured empirical NTK: layer inner is not called once"):
            empirical_ntk(net, a, b, method="structured")


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


def test_probe_counts_outputs_and_dtype() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    fn, params = functional(net)
    p = probe(fn, params, _x(5, 10))
    assert (p.n_outputs, p.itemsize, p.dtype) == (3, 8, torch.float64)
    assert p.param_bytes == 8 * (4 * 6 + 6 + 6 * 3 + 3)
