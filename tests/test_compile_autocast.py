"""`torch.autocast` (bfloat16 on CPU) and `torch.compile(fullgraph=True)` on the shared and
per-sample paths; value checks on conditions (NaN/inf, task-id range) and their `validate` switch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn

from models import SmallCNN, mlp

# bfloat16 keeps 8 significant bits: each rounding errs by up to 2^-9 ~ 2e-3 relative. Outputs here
# are O(1) and pass through ~5 layers whose inputs and weights are rounded (hypernetwork + target;
# observed max error 1.5e-2 on outputs up to 4.8), so 2e-2 abs + 2e-2 rel (~10 roundings); another
# sample's weights change outputs by > 0.2 (checked below), so a mix-up cannot hide in it.
BF16: dict[str, Any] = dict(atol=2e-2, rtol=2e-2)
# aot_eager runs the same kernels as eager, only traced: float32 differences of a few ulps at most.
COMPILED: dict[str, Any] = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    """Each test compiles new models of the same classes: start from an empty cache, so that the
    recompile limit (per code object, over the whole session) is never what a test measures."""
    torch._dynamo.reset()


def _task_model(target_module: nn.Module) -> hn.HyperModel:
    torch.manual_seed(0)
    target = hn.TargetNetwork(target_module)
    return hn.HyperModel(target, hn.MLPHyperNetwork(4, target.spec, hidden=(16,)), hn.TaskEmbedding(3, 4))


class ReadsMT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.l.weight.mT + self.l.bias


CASES = {
    "mlp": (mlp, lambda: torch.randn(6, 6)),
    "cnn": (lambda: SmallCNN().eval(), lambda: torch.randn(6, 2, 6, 6)),
    "fallback": (lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), ReadsMT()), lambda: torch.randn(6, 6)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_autocast_bf16_matches_float32(case: str) -> None:
    build, inputs = CASES[case]
    model = _task_model(build())
    x = inputs()
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    for cond in (ids, torch.tensor(1)):  # per-sample, shared
        ref = model(x, cond).detach()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x, cond)
        assert not torch.equal(got.float(), ref)  # autocast really ran (rounded somewhere)
        torch.testing.assert_close(got.float(), ref, **BF16)
    per_sample = model(x, ids).detach()
    # the tolerance is well below what another sample's weights would change (rows 3..5 use the
    # same tasks as 0..2: compare each row with the next task's weights on the same input)
    other = model(x, (ids + 1) % 3).detach()
    assert (per_sample - other).abs().amax(1).min() > 4 * BF16["atol"]


def test_autocast_dtype_is_only_allowed_under_autocast() -> None:
    target = hn.TargetNetwork(nn.Linear(3, 2))
    w = target.initial_weights().bfloat16()
    with pytest.raises(TypeError, match="dtype torch.bfloat16 does not match the target's torch.float32"):
        target(torch.randn(2, 3), w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert target(torch.randn(2, 3), w).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="float16"):
        target(torch.randn(2, 3), w.half())  # not the autocast dtype


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_fullgraph_matches_eager(case: str) -> None:
    build, inputs = CASES[case]
    model = _task_model(build())
    x = inputs()
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    model(x, ids)  # one eager call: `auto` learns which module needs vmap before tracing
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for cond in (ids, torch.tensor(1)):
        ref = model(x, cond)
        got = compiled(x, cond)
        torch.testing.assert_close(got, ref, **COMPILED)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), model.hypernetwork.head.weight)
        (g,) = torch.autograd.grad(got.square().sum(), model.hypernetwork.head.weight)
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_compiled_batchnorm_training_updates_running_stats_once() -> None:
    eager = _task_model(SmallCNN().train())
    traced = copy.deepcopy(eager)
    x, ids = torch.randn(6, 2, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    ref = eager(x, ids)
    got = torch.compile(traced, fullgraph=True, backend="aot_eager")(x, ids)
    torch.testing.assert_close(got, ref, **COMPILED)
    bn, bn_ref = traced.target.module.bn1, eager.target.module.bn1
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, **COMPILED)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, **COMPILED)
    assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 1


def test_compiled_vmap_engine_and_mip_encoding() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(mlp(), engine="vmap")
    model = hn.HyperModel(target, hn.MLPHyperNetwork(3, target.spec, hidden=(16,), parametrization="mip"))
    x, z = torch.randn(5, 6), torch.rand(5, 3)
    torch.testing.assert_close(torch.compile(model, fullgraph=True, backend="aot_eager")(x, z), model(x, z), **COMPILED)
    onehot = _task_model(mlp())
    onehot.conditioner = hn.TaskOneHot(3)
    onehot.hypernetwork = hn.MLPHyperNetwork(3, onehot.target.spec, hidden=(8,), parametrization="mip")
    ids = torch.tensor([2, 0, 1, 1, 0])
    got = torch.compile(onehot, fullgraph=True, backend="aot_eager")(x, ids)
    torch.testing.assert_close(got, onehot(x, ids), **COMPILED)


def test_nan_and_inf_conditions_are_rejected_unless_validate_is_off() -> None:
    target = hn.TargetNetwork(mlp())
    model = hn.HyperModel(target, hn.MLPHyperNetwork(2, target.spec, hidden=(8,)))  # standard, not MIP
    x = torch.randn(2, 6)
    for bad in (float("nan"), float("inf")):
        cond = torch.tensor([[0.1, bad], [0.2, 0.3]])
        with pytest.raises(ValueError, match="cond: contains NaN or inf"):
            model(x, cond)
    model.hypernetwork.validate = False
    assert torch.isnan(model(x, torch.tensor([[0.1, float("nan")], [0.2, 0.3]]))[0]).all()
    mip = hn.MLPHyperNetwork(2, model.target.spec, hidden=(8,), parametrization="mip")
    with pytest.raises(ValueError, match="NaN"):
        mip(torch.tensor([0.5, float("nan")]))
    mip.validate = False  # MIP's own range check (InputEncoding's check_range) still catches it
    with pytest.raises(ValueError, match=r"finite inputs in \[0, 1\]"):
        mip(torch.tensor([0.5, float("nan")]))


def test_task_id_range_check_can_be_turned_off() -> None:
    with pytest.raises(ValueError, match=r"task ids: must lie in \[0, 2\], got range \[0, 3\]"):
        hn.TaskEmbedding(3, 4)(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"task ids: must lie in \[0, 2\]"):
        hn.TaskOneHot(3)(torch.tensor([-1]))
    # validate=False: no host-side check; torch's own kernels then decide (one_hot raises its own)
    assert hn.TaskOneHot(3, validate=False)(torch.tensor([2])).tolist() == [[0.0, 0.0, 1.0]]
    assert hn.TaskEmbedding(3, 4, validate=False)(torch.tensor([1, 2])).shape == (2, 4)
