"""Every empirical-NTK method against an explicit autograd loop (issue #11, item 1), on a network
with three hidden layers whose output axes are not interchangeable: the loop's own kernel is
checked to be asymmetric under swapping the two output axes (and under swapping x1 and x2), so a
method that returned `[N1, N2, O2, O1]` or `[N2, N1, ...]` could not pass.

float64 throughout: the methods and the loop differ only by summation order (~1e-15 relative on
entries of O(1)); 1e-10 is far below any real error (a missing layer's contribution, a dropped
bias term or a swapped axis change entries by O(0.1)).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from hypernet.kernels import empirical_ntk, functional

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)
METHODS = ["jacobian", "ntvp", "structured"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)
    ).double()
    with torch.no_grad():  # output units of very different scales: no symmetry between them
        net[-1].weight.mul_(torch.tensor([[0.3], [1.0], [2.5]], dtype=torch.float64))
        net[-1].bias.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    return net


def _loop_ntk(net: nn.Module, x1: Tensor, x2: Tensor) -> Tensor:
    """`Θ[i, j, a, b] = <∂f_a(x1_i)/∂θ, ∂f_b(x2_j)/∂θ>`, one autograd call per (point, output)."""
    params = list(net.parameters())

    def grads(x: Tensor) -> Tensor:  # [N, O, P]
        rows = []
        for i in range(x.shape[0]):
            out = net(x[i : i + 1])[0]
            rows.append(
                torch.stack(
                    [
                        torch.cat([g.flatten() for g in torch.autograd.grad(out[a], params, retain_graph=True)])
                        for a in range(out.shape[0])
                    ]
                )
            )
        return torch.stack(rows)

    g1, g2 = grads(x1), grads(x2)
    return torch.einsum("iap,jbp->ijab", g1, g2)


def _points(n: int, seed: int) -> Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_reference_is_not_symmetric_in_its_axes() -> None:
    # The loop's kernel must change under each swap by far more than the 1e-10 tolerance, else the
    # method tests below could not see it. (An MLP's output-output block is close to symmetric, as
    # only the shared lower layers couple two outputs: the asymmetry is ~2e-2 on entries up to 7,
    # still 1e8 times the tolerance.) Permuting the outputs moves the diagonal by far more.
    net = _net()
    ref = _loop_ntk(net, _points(4, 1), _points(4, 2))  # square in N so the point swap is comparable
    assert (ref - ref.transpose(2, 3)).abs().max() > 1e-3
    assert (ref - ref.transpose(0, 1)).abs().max() > 1e-1
    diag = ref.diagonal(0, 2, 3)  # [N1, N2, O]
    assert (diag - diag.flip(-1)).abs().max() > 1.0


# Catches: swapped output axes (`ijba`), x1/x2 swapped, a layer's parameters left out, bias terms
# dropped, the trace/diagonal reductions taken over the wrong axes, and x2=None not meaning x1.
@pytest.mark.parametrize("method", METHODS)
def test_every_method_against_the_loop(method: str) -> None:
    net = _net()
    fn, params = functional(net)
    x1, x2 = _points(5, 1), _points(3, 2)
    ref = _loop_ntk(net, x1, x2)
    full = empirical_ntk(fn, params, x1, x2, method=method)
    assert full.shape == (5, 3, 3, 3)
    torch.testing.assert_close(full, ref, **TOL)
    torch.testing.assert_close(
        empirical_ntk(fn, params, x1, x2, method=method, output="trace"), ref.diagonal(0, 2, 3).sum(-1), **TOL
    )
    torch.testing.assert_close(
        empirical_ntk(fn, params, x1, x2, method=method, output="diagonal"), ref.diagonal(0, 2, 3), **TOL
    )
    torch.testing.assert_close(empirical_ntk(fn, params, x1, method=method), _loop_ntk(net, x1, x1), **TOL)


# Catches: the ntvp method mixing up columns when its products are chunked.
def test_ntvp_chunking_does_not_change_values() -> None:
    net = _net()
    fn, params = functional(net)
    x1, x2 = _points(5, 1), _points(3, 2)
    ref = _loop_ntk(net, x1, x2)
    for chunk in (1, 2, 5):
        torch.testing.assert_close(empirical_ntk(fn, params, x1, x2, method="ntvp", chunk=chunk), ref, **TOL)
