"""Low-rank generated weights applied as `x W0^T + (x V) U^T` (`hypernet.factored`).

References are independent of the factored path: the dense weights `hypernetwork(cond)` (which
form every `W0 + U V^T`) through the ordinary per-sample engine, and a Python loop over
`target.materialize(w[i])` (plain modules, no engine at all). float64, so 1e-10 is rounding only:
dropping the base, the factors or a bias changes outputs by O(0.1).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import hypernet as hn

_spec = importlib.util.spec_from_file_location(
    "lowrank_gpt", Path(__file__).resolve().parents[1] / "examples" / "lowrank_gpt.py"
)
assert _spec is not None and _spec.loader is not None
gpt_example = importlib.util.module_from_spec(_spec)
sys.modules["lowrank_gpt"] = gpt_example
_spec.loader.exec_module(gpt_example)

B, T = 5, 6


def _gpt_model(rank: int = 3) -> hn.HyperModel:
    torch.manual_seed(0)
    gpt = gpt_example.TinyGPT(vocab=11, d=16, depth=2, heads=2, context=T)
    model = gpt_example.adapted(gpt, num_tasks=3, rank=rank, hidden=(8,)).double()
    with torch.no_grad():  # factors away from their init so every term of W0 + U V^T matters
        for p in model.hypernetwork.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _grads(model: nn.Module, out: Tensor) -> list[Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(out.square().sum(), params))


@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "per-task"])
def test_gpt_factored_equals_dense_weights_and_a_loop_of_plain_modules(per_sample: bool) -> None:
    model = _gpt_model()
    ids = torch.randint(0, 11, (B, T))
    cond = torch.tensor([0, 2, 1, 2, 0]) if per_sample else torch.tensor(1)
    factored = model(ids, cond)  # HyperModel hands LowRankWeights to the target
    h = model.condition(ids, cond)
    dense = model.target(ids, model.hypernetwork(h))  # [B, P] or [P], through the ordinary engine
    torch.testing.assert_close(factored, dense, atol=1e-10, rtol=0)
    w = model.hypernetwork(h).detach()
    for i in range(B):  # plain modules, one per sample: no engine involved
        plain = model.target.materialize(w[i] if per_sample else w)
        torch.testing.assert_close(factored[i : i + 1].detach(), plain(ids[i : i + 1]), atol=1e-10, rtol=0)
    for a, b in zip(_grads(model, factored), _grads(model, dense)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


class _Shapes(TorchDispatchMode):
    """Records the shape of every tensor that every aten op takes or makes (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: set[tuple[int, ...]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, Tensor):
                self.shapes.add(tuple(t.shape))
        return out


def _per_sample_matrices(model: hn.HyperModel, batch: int) -> set[tuple[int, ...]]:
    shapes: set[tuple[int, ...]] = set()
    for info in model.target.spec.tensors:
        if len(info.shape) == 2:
            o, i = info.shape
            shapes |= {(batch, o, i), (batch, i, o)}
    return shapes


def test_per_sample_engine_never_forms_a_batch_of_full_matrices() -> None:
    """Every shape any op sees in forward and backward of the factored path, against [B, out, in]
    (and its transpose) for every generated matrix. The recorder is shown to catch them: the
    dense path, which forms the matrices, is recorded too."""
    model = _gpt_model()
    ids = torch.randint(0, 11, (B, T))
    cond = torch.tensor([0, 2, 1, 2, 0])
    forbidden = _per_sample_matrices(model, B)
    # q, k, v, out: d x d; fc, proj: 4d x d and d x 4d (d = 16). T = 6, so no activation has these shapes
    assert forbidden == {(B, 16, 16), (B, 64, 16), (B, 16, 64)}
    with _Shapes() as rec:
        model(ids, cond).square().sum().backward()
    assert not rec.shapes & forbidden, sorted(rec.shapes & forbidden)
    with _Shapes() as dense:
        model.target(ids, model.hypernetwork(model.condition(ids, cond))).square().sum().backward()
    assert dense.shapes & forbidden  # the recorder sees them when they exist


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.mha(x, x, x, need_weights=False)[0]
        return out


def test_conv_factors_are_merged_per_sample_and_vmap_targets_get_merged_weights() -> None:
    torch.manual_seed(0)
    conv = hn.TargetNetwork(nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)))
    attn = hn.TargetNetwork(_SelfAttention())  # nn.MultiheadAttention is opaque: it runs under vmap
    assert "'mha'" in attn.engine_reason
    for target, x in ((conv, torch.randn(B, 2, 6, 6)), (attn, torch.randn(B, 4, 8))):
        target = target.double()
        hyper = hn.LowRankHyperNetwork(3, target.spec, rank=2, hidden=(8,), theta0=target.initial_weights()).double()
        with torch.no_grad():
            for p in hyper.parameters():
                p.add_(0.1 * torch.randn_like(p))
        c = torch.randn(B, 3, dtype=torch.float64)
        x = x.double()
        torch.testing.assert_close(target(x, hyper.factorized(c)), target(x, hyper(c)), atol=1e-10, rtol=0)


def test_factored_weights_of_the_wrong_batch_are_refused() -> None:
    model = _gpt_model()
    ids = torch.randint(0, 11, (B, T))
    lw = model.hypernetwork.factorized(model.condition(ids, torch.tensor([0, 1, 2])))
    with pytest.raises(ValueError, match=r"expected \[5, out, r\]"):
        model.target(ids, lw)


def test_hypernetize_lowrank_gpt_takes_the_factored_path() -> None:
    """`hn.hypernetize(..., design="lowrank", rank=r)` on the GPT stack: per-sample outputs equal the
    dense weights' and no [B, out, in] appears (the same recorder as above)."""
    torch.manual_seed(0)
    gpt = gpt_example.TinyGPT(vocab=11, d=16, depth=1, heads=2, context=T)
    gen = [f"blocks.*.{p}.weight" for p in gpt_example.PROJECTIONS]
    model = hn.hypernetize(gpt, 3, generate=gen, design="lowrank", rank=2, zero_init=False).double()
    ids, cond = torch.randint(0, 11, (B, T)), torch.rand(B, 3, dtype=torch.float64)
    with _Shapes() as rec:
        out = model(ids, cond)
    assert not rec.shapes & _per_sample_matrices(model, B)
    dense = model.target(ids, model.hypernetwork(model.condition(ids, cond)))
    torch.testing.assert_close(out, dense, atol=1e-10, rtol=0)
    assert (out - gpt.double()(ids)).abs().max() > 1e-3  # the adapters are not zero: the check has teeth


def test_factored_weights_follow_the_auto_fallback() -> None:
    """A layer that reads its weight itself (`.mT`, found only at call time) and a fused attention
    (known at construction): with factored low-rank weights under engine="auto" both run under vmap
    with merged weights, and the outputs equal a loop of materialized modules. (Catches a factored
    path that skips the fallback and raises NoBatchedRule.)"""

    class ReadsWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.lin.weight.mT + self.lin.bias

    torch.manual_seed(0)
    model = hn.hypernetize(
        nn.Sequential(nn.Linear(4, 4), nn.ReLU(), ReadsWeight()),
        2,
        design="lowrank",
        rank=1,
        hidden=(8,),
        zero_init=False,
    )
    x, c = torch.randn(5, 4), torch.rand(5, 2)
    out = model(x, c)
    assert "'2'" in model.target.engine_reason  # the custom layer, learned at call time
    ref = torch.stack([model.target.materialize(model.weights(c[i]))(x[i : i + 1])[0] for i in range(5)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)  # float32, merged vs factored order
    with pytest.raises(NotImplementedError, match="mT"):
        strict = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), ReadsWeight()), engine="batched")
        hyper = hn.LowRankHyperNetwork(2, strict.spec, rank=1, hidden=(8,), theta0=strict.initial_weights())
        hn.HyperModel(strict, hyper)(x, c)
