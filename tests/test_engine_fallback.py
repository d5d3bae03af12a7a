"""The per-sample engine never broadcasts silently, falls back to vmap on its own (per module where
it can), keeps BatchNorm's running statistics updated once, and learns new layers by register_rule.

References are independent: a Python loop over `target.materialize(w_i)` plain modules, with
gradients read from their own parameters. float64 throughout, so 1e-10 is far below any real error
(a broadcast or a swapped sample changes outputs by O(0.1))."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hypernet as hn
from hypernet import batched_ops

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)


class ReadsMT(nn.Module):
    """Reads its child's weight directly: `x @ l.weight.mT` (the issue's silent-broadcast case)."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x @ self.l.weight.mT + self.l.bias


class ReadsT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.l.weight.T) + self.l.bias


class ReadsDataT(nn.Module):
    """`.data` cuts the gradient to the weight (the bias still gets one), in the reference too."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.l.weight.data.T + self.l.bias


class OwnLinear(nn.Linear):
    """A subclass of a supported type whose forward is its own: unknown to the engine."""

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.t() * 0.5 + self.bias


LAYERS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "mT": (ReadsMT, "'mT'"),
    "T": (ReadsT, "'T'"),
    "data": (ReadsDataT, "'T'"),
    "override": (lambda: OwnLinear(4, 3), "OwnLinear overrides Linear.forward"),
}


def _build(layer: str, placement: str) -> nn.Module:
    inner = LAYERS[layer][0]()
    if placement == "root":
        return inner
    return nn.Sequential(nn.Linear(4, 4), nn.Tanh(), inner)  # the Linear stays batched


def _loop(target: hn.TargetNetwork, x: Tensor, w: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Outputs and d(sum(y * g))/dw, one plain module per sample."""
    outs, grads = [], []
    for i in range(x.shape[0]):
        plain = target.materialize(w[i].detach())
        y = plain(x[i : i + 1])
        (y * g[i : i + 1]).sum().backward()
        params = dict(plain.named_parameters())
        got = {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
        grads.append(target.spec.flatten({n: got[n] for n in target.spec.names}))
        outs.append(y)
    return torch.cat(outs).detach(), torch.stack(grads)


@pytest.mark.parametrize("placement", ["root", "nested"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_auto_equals_loop_and_batched_raises_naming_the_op(layer: str, placement: str) -> None:
    torch.manual_seed(0)
    module = _build(layer, placement).double()
    target = hn.TargetNetwork(module)
    B = 5
    x = torch.randn(B, 4, dtype=torch.float64)
    w = (target.initial_weights() + 0.3 * torch.randn(B, target.spec.numel, dtype=torch.float64)).requires_grad_()
    y = target(x, w)
    assert y.shape == (B, 3)  # the old engine returned [5, 5, 3] for `.mT`
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), w)
    y_ref, grad_ref = _loop(target, x, w, g)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(grad, grad_ref, **TOL)
    # the rest of the module stays batched; the layer (or, at the root, everything) runs under vmap
    if placement == "nested":
        assert (target.engine, target.vmap_modules) == ("batched", ["2"]), target.engine_reason
    else:
        assert target.engine == "vmap", target.engine_reason
    assert LAYERS[layer][1].strip("'") in target.engine_reason
    with pytest.raises((batched_ops.NoBatchedRule, ValueError), match=LAYERS[layer][1]):
        hn.TargetNetwork(module, engine="batched")(x, w.detach())


def test_data_then_a_rule_stays_batched() -> None:
    """`.data` of a generated tensor is per-sample too, so `F.linear(x, w.data)` needs no fallback."""

    class LinearOfData(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return F.linear(x, self.l.weight.data, self.l.bias)

    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), LinearOfData()).double())
    x = torch.randn(4, 4, dtype=torch.float64)
    w = target.initial_weights() + 0.3 * torch.randn(4, target.spec.numel, dtype=torch.float64)
    y = target(x, w)
    assert target.vmap_modules == [] and target.engine == "batched"
    g = torch.randn_like(y)
    y_ref, _ = _loop(target, x, w, g)
    torch.testing.assert_close(y, y_ref, **TOL)


def test_choice_is_cached_and_a_failed_try_is_undone() -> None:
    """The first call tries batched once, then the layer under vmap; later calls go straight there.
    Dropout before the failing layer draws the same masks as a call that knew the choice already:
    the failed try's RNG draws were undone."""
    module = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), ReadsMT()).double().train()
    target = hn.TargetNetwork(module)
    layer = target.module[2]
    x = torch.randn(6, 4, dtype=torch.float64)
    w = target.initial_weights() + 0.3 * torch.randn(6, target.spec.numel, dtype=torch.float64)
    torch.manual_seed(3)
    first = target(x, w)
    assert layer.calls == 2  # the failed batched try, then once under vmap
    torch.manual_seed(3)
    again = target(x, w)
    assert layer.calls == 3  # decided: no second try
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert "'2' (ReadsMT.forward: 'mT' has no batched rule)" in target.engine_reason


def test_batchnorm_running_stats_updated_once_after_a_fallback() -> None:
    """Linear -> BatchNorm (training) -> a layer that needs vmap. The failed batched try had already
    updated BatchNorm's buffers; after the fallback they equal ONE update of a plain BatchNorm fed
    the same batch, and outputs use whole-batch statistics then each sample's own affine."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), ReadsMT()).double().train()
    target = hn.TargetNetwork(module)
    B = 6
    x = torch.randn(B, 4, dtype=torch.float64)
    w = target.initial_weights() + 0.3 * torch.randn(B, target.spec.numel, dtype=torch.float64)
    y = target(x, w)
    assert target.vmap_modules == ["2"]
    plains = [target.materialize(w[i]) for i in range(B)]
    h = torch.cat([p[0](x[i : i + 1]) for i, p in enumerate(plains)]).detach()
    bn = nn.BatchNorm1d(4).double().train()
    bn(h)  # the reference: one update from the whole batch
    got = target.module[1]
    torch.testing.assert_close(got.running_mean, bn.running_mean, **TOL)
    torch.testing.assert_close(got.running_var, bn.running_var, **TOL)
    assert int(got.num_batches_tracked) == 1
    hhat = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps)
    y_ref = torch.cat([p[2](hhat[i : i + 1] * p[1].weight + p[1].bias) for i, p in enumerate(plains)])
    torch.testing.assert_close(y, y_ref.detach(), **TOL)


def test_whole_target_fallback_with_batchnorm_training_raises_and_leaves_buffers() -> None:
    """When the module needing vmap holds a BatchNorm in training mode, vmap cannot give batch
    statistics: a clear error, and the failed try left the running statistics as they were."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn, self.l = nn.BatchNorm1d(4), nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.bn(x) @ self.l.weight.mT

    target = hn.TargetNetwork(Block().train())
    before = {k: v.clone() for k, v in target.module.state_dict().items()}
    w = target.initial_weights() + 0.1 * torch.randn(5, target.spec.numel)
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        target(torch.randn(5, 4), w)
    for k, v in target.module.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    target.eval()
    assert target(torch.randn(5, 4), w).shape == (5, 3)  # eval: vmap works


def test_shape_metadata_answers_for_one_sample() -> None:
    """`weight.shape` read inside the batched pass gives the layer's own shape, so code that sizes
    activations by it is right (with the batch of weight sets it would be [B, 3, 4])."""

    class SizesBy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(4, 6)

        def forward(self, x: Tensor) -> Tensor:
            out, inp = self.l.weight.shape
            assert self.l.weight.ndim == 2 and self.l.weight.size(-1) == inp and self.l.weight.numel() == out * inp
            return self.l(x).reshape(x.shape[0], 2, out // 2).sum(1)

    target = hn.TargetNetwork(nn.Sequential(SizesBy()).double())
    x = torch.randn(5, 4, dtype=torch.float64)
    w = target.initial_weights() + 0.3 * torch.randn(5, target.spec.numel, dtype=torch.float64)
    y = target(x, w)
    assert target.engine == "batched" and target.vmap_modules == []
    torch.testing.assert_close(y, _loop(target, x, w, torch.ones(5, 3, dtype=torch.float64))[0], **TOL)


@pytest.fixture
def prelu_rule() -> Iterator[list[int]]:
    calls: list[int] = []

    def prelu(ctx: batched_ops.PerSampleMode, input: Tensor, weight: Tensor) -> Tensor:
        calls.append(1)
        w = ctx.batched(weight).reshape(ctx.B, -1, *[1] * (input.ndim - 2))
        return torch.where(input >= 0, input, w * input)

    hn.register_rule(F.prelu, prelu, modules=nn.PReLU)
    try:
        yield calls
    finally:
        batched_ops.unregister_rule(F.prelu, [nn.PReLU])


def test_unknown_layer_runs_under_vmap_before_a_rule_is_registered() -> None:
    target = hn.TargetNetwork(nn.Sequential(nn.Conv1d(2, 3, 3), nn.PReLU(3)))
    assert target.vmap_modules == ["1"] and "PReLU is not a layer type" in target.engine_reason
    with pytest.raises(ValueError, match="'1': PReLU is not a layer type with batched rules"):
        hn.TargetNetwork(nn.Sequential(nn.Conv1d(2, 3, 3), nn.PReLU(3)), engine="batched")


def test_registered_rule_is_used_and_correct(prelu_rule: list[int]) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv1d(2, 3, 3), nn.PReLU(3)).double()
    target = hn.TargetNetwork(module, engine="batched")  # would raise without the rule
    assert target.vmap_modules == []
    B = 4
    x = torch.randn(B, 2, 7, dtype=torch.float64)
    base = target.initial_weights()
    w = (base + 0.5 * torch.randn(B, base.numel(), dtype=torch.float64)).requires_grad_()
    y = target(x, w)
    assert len(prelu_rule) == 1  # the rule ran, once for the batch
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), w)
    y_ref, grad_ref = _loop(target, x, w, g)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(grad, grad_ref, **TOL)


def test_register_rule_rejects_non_module_types() -> None:
    with pytest.raises(TypeError, match="modules must be nn.Module types"):
        hn.register_rule(F.prelu, lambda ctx, *a: a[0], modules=[int])  # type: ignore[list-item]
