"""`empirical_ntk` with a module passed in, its blocking to a memory budget, and its memory use."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch._C._profiler import _EventType
from torch.func import functional_call
from torch.profiler import ProfilerActivity, profile

import hypernet as hn

K = hn.kernels
OUTPUTS = ["full", "trace", "diagonal"]


def _x(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _asymmetric_net() -> nn.Module:
    """Two hidden layers; output rows scaled differently, so Θ[i, j, a, b] != Θ[i, j, b, a]."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        net[-1].weight[0] *= 3.0
        net[-1].weight[2] *= 0.2
        net[-1].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    return net


def _loop_ntk(f: Callable[[int, int, int], torch.Tensor], n1: int, n2: int, o: int, params: list) -> torch.Tensor:
    """Θ[i, j, a, b] = <∂f_a(x1_i)/∂θ, ∂f_b(x2_j)/∂θ>, one torch.autograd.grad call per (set, row, unit)."""

    def grad(which: int, i: int, a: int) -> torch.Tensor:
        return torch.cat([g.flatten() for g in torch.autograd.grad(f(which, i, a), params)])

    g1 = torch.stack([torch.stack([grad(1, i, a) for a in range(o)]) for i in range(n1)])  # [n1, O, P]
    g2 = torch.stack([torch.stack([grad(2, j, b) for b in range(o)]) for j in range(n2)])
    return torch.einsum("iap,jbp->ijab", g1, g2)


def _reduce(full: torch.Tensor, output: str) -> torch.Tensor:
    if output == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag.sum(-1) if output == "trace" else diag


def test_module_in_equals_functional_and_an_autograd_loop() -> None:
    net = _asymmetric_net()
    x1, x2 = _x(5, 4, 1), _x(3, 4, 2)
    ref = _loop_ntk(lambda s, i, a: net((x1 if s == 1 else x2)[i : i + 1])[0, a], 5, 3, 3, list(net.parameters()))
    # the output axes are not interchangeable: swapping a and b (or the units) moves entries by
    # far more than the 1e-10 tolerance below, so such a mix-up cannot pass
    assert (ref - ref.transpose(2, 3)).abs().max() > 1e-2
    assert (ref[..., 0, 0] - ref[..., 2, 2]).abs().max() > 1e-1
    fn, params = K.functional(net)
    for output in OUTPUTS:
        assert K.plan_empirical_ntk(net, x1, x2, output=output).method == "structured"
        module_in = K.empirical_ntk(net, x1, x2, output=output)
        # float64 sums of ~400 O(1) products round at ~1e-14; 1e-10 is far below any real difference
        torch.testing.assert_close(module_in, _reduce(ref, output), atol=1e-10, rtol=0)
        torch.testing.assert_close(module_in, K.empirical_ntk(fn, params, x1, x2, output=output), atol=1e-12, rtol=0)
    sym = _loop_ntk(lambda s, i, a: net(x1[i : i + 1])[0, a], 5, 5, 3, list(net.parameters()))
    torch.testing.assert_close(K.empirical_ntk(net, x1), sym, atol=1e-10, rtol=0)


def test_hypermodel_in_is_the_ntk_of_the_hypernetwork_parameters() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double())
    hyper = hn.MLPHyperNetwork(2, target.spec, hidden=(10,)).double()
    model = hn.HyperModel(target, hyper)
    x1, z1, x2, z2 = _x(4, 3, 1), _x(4, 2, 2), _x(3, 3, 3), _x(3, 2, 4)
    ps = list(hyper.parameters())

    def f(s: int, i: int, a: int) -> torch.Tensor:
        x, z = (x1, z1) if s == 1 else (x2, z2)
        return model(x[i : i + 1], z[i : i + 1])[0, a]

    ref = _loop_ntk(f, 4, 3, 2, ps)
    assert K.plan_empirical_ntk(model, (x1, z1), (x2, z2)).method == "structured"
    for output in OUTPUTS:
        got = K.empirical_ntk(model, (x1, z1), (x2, z2), output=output)
        torch.testing.assert_close(got, _reduce(ref, output), atol=1e-10, rtol=0)
        jac = K.empirical_ntk(model, (x1, z1), (x2, z2), output=output, method="jacobian")
        torch.testing.assert_close(got, jac, atol=1e-10, rtol=0)


def test_plain_closure_warns_that_the_module_is_faster() -> None:
    net = _asymmetric_net()
    _, params = K.functional(net)
    x = _x(4, 4, 0)

    def closure(p: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(net, p, (inputs,))

    with pytest.warns(UserWarning, match="passing the nn.Module itself"):
        got = K.empirical_ntk(closure, params, x, output="trace")
    torch.testing.assert_close(got, K.empirical_ntk(net, x, output="trace"), atol=1e-10, rtol=0)
    with pytest.warns(UserWarning, match="passing the nn.Module itself"):
        assert K.plan_empirical_ntk(closure, params, x).method == "jacobian"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit method, or the module itself: no hint
        K.empirical_ntk(closure, params, x, method="jacobian")
        K.empirical_ntk(net, x)


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp"])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocked_equals_unblocked(method: str, output: str, symmetric: bool) -> None:
    net = _asymmetric_net()
    x1, x2 = _x(11, 4, 1), (None if symmetric else _x(7, 4, 2))
    whole = K.plan_empirical_ntk(net, x1, x2, method=method, output=output)
    n2 = 11 if symmetric else 7
    assert whole.block == (11, n2)
    # a budget below the unblocked estimate forces smaller blocks (or fewer products at once);
    # the smallest fraction that still fits one block blocks the most
    for fraction in (0.2, 0.35, 0.5, 0.7, 0.9):
        budget = int(whole.peak_bytes * fraction)
        try:
            small = K.plan_empirical_ntk(net, x1, x2, method=method, output=output, max_memory=budget)
            break
        except ValueError:
            continue
    else:
        pytest.fail("no budget below the unblocked estimate fits one block")
    assert small.block[0] < 11 or (small.products or 0) < (whole.products or 0)
    assert small.peak_bytes <= budget
    blocked = K.empirical_ntk(net, x1, x2, method=method, output=output, max_memory=budget)
    unblocked = K.empirical_ntk(net, x1, x2, method=method, output=output)
    torch.testing.assert_close(blocked, unblocked, atol=1e-12, rtol=0)
    reference = K.empirical_ntk(net, x1, x2, method="jacobian", output=output)
    torch.testing.assert_close(blocked, reference, atol=1e-10, rtol=0)


def _peak_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Peak of live CPU tensor memory during `run`, above what was live before it.

    tracemalloc does not see torch's allocator, and process RSS is too coarse for a few MB; the
    profiler with `profile_memory=True` records every allocation and free of torch's CPU allocator,
    temporaries inside an operation included, with their sizes (negative for frees). Summing them
    in time order gives the live-memory curve, whose maximum is the peak."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation:
            events.append((e.start_time_ns, e.extra_fields.alloc_size))
    assert events, "the profiler recorded no allocations"
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    del out
    return peak


@pytest.mark.parametrize("output", ["trace", "diagonal"])
@pytest.mark.parametrize("method", ["structured", "ntvp"])
def test_trace_and_diagonal_memory_does_not_grow_with_outputs(output: str, method: str) -> None:
    """O = 1 against O = 10 at the same N: the peak may grow only by the result's own growth plus
    the [N, O]-sized outputs and their gradients. Building an [N, N, O] intermediate for "trace"
    (or [N, N, O, O] for either) would add at least 9 N² numbers, 16x more than that allowance."""
    n, item = 240, 8
    x = _x(n, 6, 0)
    peaks = {}
    for o in (1, 10):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, o)).double()
        assert K.plan_empirical_ntk(net, x, method=method, output=output).method == method
        peaks[o] = _peak_bytes(lambda net=net: K.empirical_ntk(net, x, method=method, output=output))
    result_growth = (n * n * 10 - n * n) * item if output == "diagonal" else 0
    allowance = 16 * n * 10 * item  # [N, O]-sized tensors: outputs, their gradients, one-hot seeds
    assert peaks[10] - peaks[1] <= result_growth + allowance, (peaks, result_growth, allowance)
    assert 8 * allowance < 9 * n * n * item  # so the test can fail: see the docstring
