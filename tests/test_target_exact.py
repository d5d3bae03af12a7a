"""`TargetNetwork` details that the broad tests in test_target.py leave open (issue #11, mutation
testing): which engine is chosen and the exact reason and errors it gives, a batch dimension other
than 0 on every engine, extra positional and keyword arguments on every path, the one-set shortcut,
inputs without a batch dimension, `initial_weights` as an independent copy that follows
`.to()`, meta placeholders, `materialize` leaving the target alone, and autocast weights.

References are independent of the code under test: a Python loop over `materialize`d plain
modules, or the formula written out here. float64 where values are compared, so 1e-12 is far below
any real error (a wrong sample, axis or argument changes outputs by O(0.1)).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn

TOL: dict[str, Any] = dict(atol=1e-12, rtol=1e-12)


class OwnLinear(nn.Linear):
    """A subclass whose forward is its own: the batched engine does not know it."""

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.t() + self.bias


class Affine(nn.Module):
    """Takes an extra positional and a keyword argument: `l(x) * scale + shift`."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(3, 4)

    def forward(self, x: Tensor, shift: Tensor, *, scale: float = 1.0) -> Tensor:
        return self.l(x) * scale + shift


class AffineMT(Affine):
    """The same, reading its weight with `.mT`: no batched rule, so `auto` falls back to vmap.
    More than 10 calls means the fallback retries without end: raised, so such a bug fails fast."""

    calls = 0

    def forward(self, x: Tensor, shift: Tensor, *, scale: float = 1.0) -> Tensor:
        self.calls += 1
        if self.calls > 10:
            raise RuntimeError("AffineMT: called more than 10 times: the fallback retries without end")
        return (x @ self.l.weight.mT + self.l.bias) * scale + shift


def _loop(target: hn.TargetNetwork, x: Tensor, w: Tensor, *args: object, **kwargs: object) -> Tensor:
    """One plain module per sample (batch dimension 0)."""
    return torch.cat([target.materialize(w[i])(x[i : i + 1], *args, **kwargs) for i in range(x.shape[0])])


def _weights(target: hn.TargetNetwork, batch: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, target.spec.numel, generator=gen, dtype=target.dtype)
    return target.initial_weights() + 0.3 * noise


# Catches: a wrong engine or reason string, the `"; "` joins, `n or 'the module'`, a dropped
# `vmap_modules` in the repr, `requested_engine` not stored.
def test_engine_choice_reasons_and_repr_are_exact() -> None:
    plain = hn.TargetNetwork(nn.Linear(2, 2))
    assert (plain.engine, plain.requested_engine, plain.vmap_modules) == ("batched", "auto", [])
    assert plain.engine_reason == "batched: every generated tensor belongs to a layer with batched rules"
    assert plain.extra_repr() == "generated=2 tensors, P=6, engine='batched'"
    asked = hn.TargetNetwork(nn.Linear(2, 2), engine="vmap")
    assert (asked.engine, asked.requested_engine, asked.engine_reason) == ("vmap", "vmap", "vmap: requested")
    assert hn.TargetNetwork(nn.Linear(2, 2), engine="batched").requested_engine == "batched"

    why = "OwnLinear overrides Linear.forward"
    nested = nn.Sequential(OwnLinear(4, 4), nn.Tanh(), OwnLinear(4, 3))
    target = hn.TargetNetwork(nested)
    assert (target.engine, target.vmap_modules) == ("batched", ["0", "2"])
    assert target.engine_reason == f"batched, with under vmap: '0' ({why}); '2' ({why})"
    assert target.extra_repr() == "generated=4 tensors, P=35, engine='batched', vmap_modules=['0', '2']"
    root = hn.TargetNetwork(OwnLinear(4, 3))
    assert (root.engine, root.vmap_modules) == ("vmap", [])
    assert root.engine_reason == f"vmap (whole target): the module itself: {why}"

    tail = " (teach it with hn.register_rule, or use engine='auto' or 'vmap')"
    with pytest.raises(ValueError) as info:
        hn.TargetNetwork(nested, engine="batched")
    assert str(info.value) == f"TargetNetwork: engine='batched' cannot handle '0': {why}; '2': {why}" + tail
    with pytest.raises(ValueError) as info:
        hn.TargetNetwork(OwnLinear(4, 3), engine="batched")
    assert str(info.value) == f"TargetNetwork: engine='batched' cannot handle 'the module': {why}" + tail


@pytest.mark.parametrize("batch_dim", [-1, "0", 1.0, True])
def test_batch_dim_must_be_a_non_negative_int(batch_dim: object) -> None:
    with pytest.raises(ValueError, match=re.escape(f"batch_dim must be a non-negative int, got {batch_dim!r}")):
        hn.TargetNetwork(nn.Linear(2, 2), batch_dim=batch_dim)  # type: ignore[arg-type]


# Catches: the batch dimension not handed to the batched engine (it would read dim 0), vmap's
# `in_dims` / `out_dims` dropped (time steps taken for samples, outputs stacked on dim 0).
@pytest.mark.parametrize("engine", ["auto", "batched", "vmap"])
def test_batch_dim_1_equals_loop_on_every_engine(engine: str) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    target = hn.TargetNetwork(module, batch_dim=1, engine=engine)  # type: ignore[arg-type]
    T, B = 4, 3  # different sizes, so a swapped axis cannot line up
    x = torch.randn(T, B, 3, dtype=torch.float64)
    w = _weights(target, B)
    y = target(x, w)
    expect = torch.stack([target.materialize(w[b])(x[:, b]) for b in range(B)], dim=1)
    assert y.shape == (T, B, 2)
    torch.testing.assert_close(y, expect, **TOL)


# Catches: `args` or `kwargs` dropped on any path (the shared set, batched, vmap, the fallback
# learned on the first call and the path taken once it is known, the factored low-rank path).
def test_extra_arguments_reach_the_module_on_every_path() -> None:
    torch.manual_seed(0)
    B = 4
    x = torch.randn(B, 3, dtype=torch.float64)
    shift = torch.randn(4, dtype=torch.float64)
    for module, engine in [(Affine(), "batched"), (Affine(), "auto"), (Affine(), "vmap"), (AffineMT(), "auto")]:
        target = hn.TargetNetwork(module.double(), engine=engine)  # type: ignore[arg-type]
        w = _weights(target, B)
        expect = _loop(target, x, w, shift, scale=2.5)
        for _ in range(2):  # AffineMT: the first call learns the fallback, the second knows it
            torch.testing.assert_close(target(x, w, shift, scale=2.5), expect, **TOL)
        one = target.materialize(w[0])(x, shift, scale=2.5)
        torch.testing.assert_close(target(x, w[0], shift, scale=2.5), one, **TOL)
    assert target.engine == "vmap"  # AffineMT at the root: the whole target under vmap

    target = hn.TargetNetwork(Affine().double())
    hyper = hn.LowRankHyperNetwork(2, target.spec, rank=1, hidden=(8,), theta0=target.initial_weights()).double()
    assert hyper.blocks[0].rank == 1  # the 4x3 weight is generated as factors: the factored path runs
    cond = torch.randn(B, 2, dtype=torch.float64)
    expect = _loop(target, x, hyper(cond).detach(), shift, scale=2.5)
    torch.testing.assert_close(target(x, hyper.factorized(cond), shift, scale=2.5), expect, **TOL)


# Catches: a one-set batch `[1, P]` sent down the per-sample path (under vmap a BatchNorm in
# training mode cannot run there; the shared path runs it as the plain module does).
def test_a_single_weight_set_takes_the_shared_path() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.BatchNorm1d(3).double(), engine="vmap")
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    w = _weights(target, 1)
    plain = target.materialize(w[0]).train()
    torch.testing.assert_close(target(x, w), plain(x), **TOL)
    torch.testing.assert_close(target.module.running_mean, plain.running_mean, **TOL)
    message = (
        "per-sample weights: a BatchNorm in training mode needs the 'batched' engine, which does not "
        "support some generated parameters of this module; call .eval() or generate fewer tensors"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        target(torch.randn(2, 3, 5, dtype=torch.float64), _weights(target, 2))


# Catches: a target with some modules under vmap run entirely under vmap outside torch.compile
# (a BatchNorm in training mode then raises instead of using whole-batch statistics).
def test_modules_under_vmap_keep_the_rest_batched_with_batchnorm_training() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), OwnLinear(4, 3)).double().train()
    target = hn.TargetNetwork(module)
    assert (target.engine, target.vmap_modules) == ("batched", ["2"])
    B = 5
    x = torch.randn(B, 4, dtype=torch.float64)
    w = _weights(target, B)
    y = target(x, w)
    plains = [target.materialize(w[i]) for i in range(B)]
    h = torch.cat([p[0](x[i : i + 1]) for i, p in enumerate(plains)]).detach()
    # BatchNorm in training: the batch's own biased statistics, then each sample's affine and layer
    hhat = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
    expect = torch.cat([p[2](hhat[i : i + 1] * p[1].weight + p[1].bias) for i, p in enumerate(plains)])
    torch.testing.assert_close(y, expect.detach(), **TOL)


def test_vmap_engine_draws_dropout_per_sample() -> None:
    """vmap needs `randomness=` to run dropout at all; "different" gives each sample its own mask."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5)).double().train(), engine="vmap")
    B = 4
    x = torch.randn(4, dtype=torch.float64).expand(B, 4)
    w = target.initial_weights().expand(B, -1)  # the same input and weights for every sample
    y = target(x, w)
    full = 2.0 * target.materialize(w[0])[0](x[:1])  # dropout(0.5) keeps an entry times 1 / 0.5
    kept = y != 0
    torch.testing.assert_close(y[kept], full.expand(B, 64)[kept], **TOL)
    assert not all(torch.equal(kept[0], kept[i]) for i in range(1, B))  # masks differ by sample


def test_vmap_engine_passes_non_tensor_outputs_to_vmap() -> None:
    """A non-tensor output is handed on unchanged, so vmap itself says what is wrong with it."""

    class Tagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(2, 2)

        def forward(self, x: Tensor) -> tuple[Tensor, str]:
            return self.l(x), "tag"

    target = hn.TargetNetwork(Tagged(), engine="vmap")
    with pytest.raises(ValueError, match="must only return Tensors"):
        target(torch.randn(3, 2), _weights(target, 3))


# Catches: `_batch_size` reading `.ndim` of a non-tensor input, or taking the batch from a
# dimension the input does not have (`ndim >= dim`).
def test_inputs_without_a_batch_dimension() -> None:
    class DictInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(4, 3)

        def forward(self, inp: dict[str, Tensor]) -> Tensor:
            return self.l(inp["x"])

    need = r"x: per-sample weights \[B, P\] need a Tensor input with a batch dimension"
    target = hn.TargetNetwork(DictInput().double())
    w = _weights(target, 2)
    x = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(target({"x": x}, w[0]), target.materialize(w[0])({"x": x}), **TOL)
    with pytest.raises(ValueError, match=need):
        target({"x": x}, w)

    linear = hn.TargetNetwork(nn.Linear(4, 3).double(), batch_dim=1)
    v = torch.randn(4, dtype=torch.float64)  # ndim 1 == batch_dim: no batch dimension
    W, b = w[0, :12].reshape(3, 4), w[0, 12:15]
    torch.testing.assert_close(linear(v, w[0]), W @ v + b, **TOL)
    with pytest.raises(ValueError, match=need):
        linear(v, w)


def test_initial_weights_are_a_copy_that_follows_the_target() -> None:
    module = nn.Linear(3, 2)
    target = hn.TargetNetwork(module)
    original = torch.cat([module.weight.detach().flatten(), module.bias.detach()])
    got = target.initial_weights()
    torch.testing.assert_close(got, original, rtol=0, atol=0)
    got.add_(1.0)  # the caller's copy: changing it changes nothing stored
    torch.testing.assert_close(target.initial_weights(), original, rtol=0, atol=0)
    target.double()
    assert target.dtype == torch.float64 and target.initial_weights().dtype == torch.float64
    torch.testing.assert_close(target.initial_weights(), original.double(), rtol=0, atol=0)
    # the target adds no memory of its own: no buffer holds elements, none is saved
    assert sum(b.numel() for b in target.buffers()) == 0 and list(target.state_dict()) == []
    target.to("meta")  # the stored values stay where they were; the copy goes where the target is
    assert target.initial_weights().device.type == "meta"
    target.release_initial_weights()
    with pytest.raises(RuntimeError) as info:
        target.initial_weights()
    assert (
        str(info.value) == "initial_weights: released by release_initial_weights() (hypernetize keeps them as theta0)"
    )


def test_a_meta_module_gives_a_meta_target() -> None:
    target = hn.TargetNetwork(nn.Linear(3, 2, device="meta"))
    assert target.device.type == "meta"
    assert target.initial_weights().device.type == "meta"
    assert target.initial_weights().shape == (8,)


def test_placeholders_are_meta_and_materialize_leaves_the_target_alone() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double(), generate="0.*")
    placeholder = target.module[0].weight
    assert placeholder.device.type == "meta" and not isinstance(placeholder, nn.Parameter)  # no memory
    names = [n for n, _ in target.named_parameters()]
    w = _weights(target, 2)
    x = torch.randn(5, 3, dtype=torch.float64)
    first = target.materialize(w[0])
    y_first = first(x)
    second = target.materialize(w[1])
    torch.testing.assert_close(first(x), y_first, rtol=0, atol=0)  # not changed by the second
    assert first[0].weight is not second[0].weight and first[2] is not target.module[2]
    assert target.module[0].weight.device.type == "meta" and [n for n, _ in target.named_parameters()] == names
    W, b = w[0, :12].reshape(4, 3), w[0, 12:16]  # the generated layer, written out
    torch.testing.assert_close(y_first, target.module[2](torch.tanh(x @ W.T + b)), **TOL)


class Gain(nn.Module):
    """`l(x) * g`: under autocast `l(x)` is bfloat16; the product's dtype follows `g`'s."""

    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(4, 3)
        self.g = nn.Parameter(torch.full((3,), 1.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.l(x) * self.g


def test_autocast_weights_run_as_the_modules_own_dtype() -> None:
    """Weights in the autocast dtype are cast back to the module's float32, as a plain module's
    parameters are: the output equals the plain module's under the same autocast, dtype included."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(Gain())
    w = _weights(target, 1)[0].bfloat16()
    x = torch.randn(2, 4)
    plain = target.materialize(w.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, expect = target(x, w), plain(x)
        assert expect.dtype == torch.float32
        torch.testing.assert_close(y, expect, rtol=0, atol=0)  # the same ops on the same values
        with pytest.raises(TypeError, match="dtype torch.float16 does not match the target's torch.float32"):
            target(x, w.half())  # not the autocast dtype
    with pytest.raises(TypeError, match="dtype torch.bfloat16 does not match the target's torch.float32"):
        target(x, w)  # no autocast: the dtype must match


class Counted(nn.Module):
    """Reads its layer's weight with `.mT` (no batched rule) and counts its calls; more than 10 calls
    in one test means the fallback retries without end (raised, so such a bug fails fast)."""

    def __init__(self, d_in: int = 4, d_out: int = 4) -> None:
        super().__init__()
        self.l = nn.Linear(d_in, d_out)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls > 10:
            raise RuntimeError("Counted: called more than 10 times: the fallback retries without end")
        return x @ self.l.weight.mT + self.l.bias


def _loop_grads(target: hn.TargetNetwork, x: Tensor, w: Tensor) -> Tensor:
    return torch.cat([target.materialize(w[i])(x[i : i + 1]) for i in range(x.shape[0])]).detach()


# Catches: `_learn` not accumulating (the second module replacing the first, the reason losing the
# first part) or never finishing (an empty `vmap_modules`, a whole-target switch that is not "vmap").
def test_auto_learns_two_modules_one_after_the_other() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(Counted(), nn.Tanh(), Counted(4, 3)).double()
    target = hn.TargetNetwork(module)
    x = torch.randn(5, 4, dtype=torch.float64)
    w = _weights(target, 5)
    torch.testing.assert_close(target(x, w), _loop_grads(target, x, w), **TOL)
    assert (target.engine, target.vmap_modules) == ("batched", ["0", "2"])
    why = "(Counted.forward: 'mT' has no batched rule)"
    assert target.engine_reason == f"batched, with under vmap: '0' {why}; '2' {why}"
    # three tries: batched (fails in '0'), '0' under vmap (fails in '2'), both under vmap
    assert (target.module[0].calls, target.module[2].calls) == (3, 2)
    target(x, w)
    assert (target.module[0].calls, target.module[2].calls) == (4, 3)  # decided: one call each


def test_auto_puts_the_outer_module_under_vmap_in_place_of_its_child() -> None:
    """The inner module fails first; then the outer one (its own `.mT`): the outer replaces the
    inner in `vmap_modules` (vmap inside vmap is never set up)."""

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Counted()
            self.l2 = nn.Linear(4, 3)

        def forward(self, x: Tensor) -> Tensor:
            return torch.tanh(self.inner(x)) @ self.l2.weight.mT

    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 4), Outer()).double())
    x = torch.randn(5, 4, dtype=torch.float64)
    w = _weights(target, 5)
    torch.testing.assert_close(target(x, w), _loop_grads(target, x, w), **TOL)
    assert (target.engine, target.vmap_modules) == ("batched", ["1"])
    assert target.engine_reason.endswith("; '1' (Outer.forward: 'mT' has no batched rule)")


def test_a_failing_module_without_generated_tensors_sends_the_whole_target_to_vmap() -> None:
    """The op fails inside `reader`, which holds no generated tensor (the weight is passed to it):
    putting `reader` alone under vmap could not map that weight, so the whole target runs there."""

    class Reader(nn.Module):
        calls = 0

        def forward(self, x: Tensor, w: Tensor) -> Tensor:
            self.calls += 1
            return x @ w.mT

    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.reader = nn.Linear(4, 3), Reader()

            self.calls = 0

        def forward(self, x: Tensor) -> Tensor:
            self.calls += 1
            return self.reader(x, self.a.weight) + self.a.bias

    torch.manual_seed(0)
    target = hn.TargetNetwork(Root().double())
    x = torch.randn(5, 4, dtype=torch.float64)
    w = _weights(target, 5)
    torch.testing.assert_close(target(x, w), _loop_grads(target, x, w), **TOL)
    assert (target.engine, target.vmap_modules) == ("vmap", [])
    assert target.engine_reason.startswith("vmap (whole target): ")
    # the batched try, then under vmap: no try with `reader` alone under vmap in between
    assert (target.module.calls, target.module.reader.calls) == (2, 2)


def test_a_failing_root_switches_to_vmap_once() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(Counted().double())
    x = torch.randn(5, 4, dtype=torch.float64)
    w = _weights(target, 5)
    torch.testing.assert_close(target(x, w), _loop_grads(target, x, w), **TOL)
    assert (target.engine, target.vmap_modules) == ("vmap", [])
    assert target.module.calls == 2  # the failed batched try, then once under vmap


def test_factored_weights_on_a_vmap_target_are_merged_without_a_batched_try() -> None:
    """A target under vmap takes `LowRankWeights` merged straight away: one module call per
    forward, not a factored (batched) try that fails first."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(Counted().double(), engine="vmap")
    hyper = hn.LowRankHyperNetwork(2, target.spec, rank=1, hidden=(8,), theta0=target.initial_weights()).double()
    assert hyper.blocks[0].rank == 1  # the 4x4 weight is factored
    cond = torch.randn(4, 2, dtype=torch.float64)
    x = torch.randn(4, 4, dtype=torch.float64)
    y = target(x, hyper.factorized(cond))
    assert target.module.calls == 1
    torch.testing.assert_close(y, _loop_grads(target, x, hyper(cond).detach()), **TOL)


def test_factored_weights_with_batch_dim_1_and_with_a_dict_input() -> None:
    """The factored low-rank path gets the target's batch dimension, and takes an input that is not
    a tensor (with nothing to snapshot)."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Linear(6, 5).double(), batch_dim=1)
    hyper = hn.LowRankHyperNetwork(2, target.spec, rank=1, hidden=(8,), theta0=target.initial_weights()).double()
    cond = torch.randn(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, 6, dtype=torch.float64)  # [T, B, d]
    w = hyper(cond).detach()
    expect = torch.stack([target.materialize(w[b])(x[:, b]) for b in range(3)], dim=1)
    torch.testing.assert_close(target(x, hyper.factorized(cond)), expect, **TOL)

    class DictInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(6, 5)

        def forward(self, inp: dict[str, Tensor]) -> Tensor:
            return self.l(inp["x"])

    target = hn.TargetNetwork(DictInput().double())
    hyper = hn.LowRankHyperNetwork(2, target.spec, rank=1, hidden=(8,), theta0=target.initial_weights()).double()
    z, x2 = torch.randn(2, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    expect = target.materialize(hyper(z).detach())({"x": x2})
    torch.testing.assert_close(target({"x": x2}, hyper.factorized(z)), expect, **TOL)


def test_factored_weights_with_engine_batched_raise_at_the_first_failure() -> None:
    """`engine="batched"` never falls back: a factored pass that meets an op without a batched rule
    raises at once, without a second (dense) pass through the module."""
    torch.manual_seed(0)
    target = hn.TargetNetwork(Counted().double(), engine="batched")
    hyper = hn.LowRankHyperNetwork(2, target.spec, rank=1, hidden=(8,), theta0=target.initial_weights()).double()
    with pytest.raises(hn.NoBatchedRule, match="'mT'"):
        target(torch.randn(3, 4, dtype=torch.float64), hyper.factorized(torch.randn(3, 2, dtype=torch.float64)))
    assert target.module.calls == 1
