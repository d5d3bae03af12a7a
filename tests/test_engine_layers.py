"""The per-sample engine, layer by layer and argument by argument, against a Python loop over
`target.materialize(w_i)` modules (plain PyTorch layers, one per sample): outputs and gradients
with respect to the generated weights and the input (issue #11, item 1).

Everything runs in float64, so the batched forms (bmm, grouped convolution, ...) and the loop differ
only by summation order: ~1e-15 relative. TOL = 1e-10 leaves room for that and nothing else; a real
error (a dropped bias, an ignored stride or dilation, sample 0's weights used for every sample) moves
outputs by O(0.1), since every sample's weights are perturbed by 0.3 (N(0, 1)) around the module's.
Only the public API is used: TargetNetwork(...), .spec, .initial_weights(), __call__, .materialize,
.engine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

import hypernet as hn
from hypernet import batched_ops

TOL: dict[str, Any] = dict(atol=1e-10, rtol=1e-10)
Split = Callable[[Any], list[Tensor]]  # module output -> tensors with the batch in dim 0


def _weights(target: hn.TargetNetwork, B: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = target.initial_weights()
    return (base + 0.3 * torch.randn(B, base.numel(), generator=g, dtype=base.dtype)).requires_grad_(True)


def _select(x: Any, i: int, dim: int) -> Any:
    return tree_map(lambda t: t.narrow(dim, i, 1) if isinstance(t, Tensor) else t, x)


def _fresh(x: Any) -> Any:
    """A detached copy of every tensor in `x`, floating ones requiring grad."""
    return tree_map(
        lambda t: t.detach().clone().requires_grad_(t.is_floating_point()) if isinstance(t, Tensor) else t, x
    )


def check_against_loop(
    module: nn.Module,
    x: Tensor,
    *,
    generate: Any = None,
    batch_dim: int = 0,
    engine: str = "auto",
    expect_engine: str = "batched",
    split: Split | None = None,
    extra: tuple[Any, ...] = (),
    extra_dims: tuple[int, ...] = (),
    whole_batch: bool = False,
) -> hn.TargetNetwork:
    """Per-sample forward and backward against the loop. `extra` are further module arguments
    (e.g. an RNN's `h0`), each sliced per sample along `extra_dims`. `whole_batch`: the reference
    runs module i on the whole batch and keeps row i (BatchNorm in training mode, whose output
    depends on the batch statistics)."""
    if split is None:  # one tensor out, its batch where the input's is

        def split(out: Any) -> list[Tensor]:
            return [out.movedim(batch_dim, 0)]

    target = hn.TargetNetwork(module, generate=generate, batch_dim=batch_dim, engine=engine)  # type: ignore[arg-type]
    assert target.engine == expect_engine  # the rule under test runs, not a fallback
    B = x.shape[batch_dim]
    w = _weights(target, B)
    xs = x.detach().clone().requires_grad_(x.is_floating_point())
    extras = _fresh(list(extra))
    outs = split(target(xs, w, *extras))
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    loss = cast(Tensor, sum((o * c).sum() for o, c in zip(outs, cots)))
    wrt = [w] + ([xs] if xs.requires_grad else []) + [e for e in tree_leaves(extras) if isinstance(e, Tensor)]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)

    xr = x.detach().clone().requires_grad_(x.is_floating_point())
    er = _fresh(list(extra))
    ref_outs: list[list[Tensor]] = []
    ref_wgrads = []
    ref_loss_total: Tensor | float = 0.0
    for i in range(B):
        m = target.materialize(w[i].detach())
        params = dict(m.named_parameters())
        gen = [params[n] for n in target.spec.names]
        if whole_batch:
            full = split(m(xr, *er))
            o_i = [t.narrow(0, i, 1) for t in full]
        else:
            args = [_select(e, i, d) for e, d in zip(er, extra_dims)] if extra_dims else er
            o_i = split(m(_select(xr, i, batch_dim), *args))
        ref_outs.append([t.detach() for t in o_i])
        loss_i = cast(Tensor, sum((t * c.narrow(0, i, 1)).sum() for t, c in zip(o_i, cots)))
        gi = torch.autograd.grad(loss_i, gen, retain_graph=True)
        ref_wgrads.append(torch.cat([t.flatten() for t in gi]))
        ref_loss_total = ref_loss_total + loss_i
    # as many outputs as the loop's (an LSTM that lost c_n must not pass by comparing fewer)
    assert all(len(r) == len(outs) for r in ref_outs), (len(outs), [len(r) for r in ref_outs])
    for k, o in enumerate(outs):
        torch.testing.assert_close(o, torch.cat([r[k] for r in ref_outs]), **TOL)
    torch.testing.assert_close(grads[0], torch.stack(ref_wgrads), **TOL)
    rest = [xr] if xr.requires_grad else []
    rest += [e for e in tree_leaves(er) if isinstance(e, Tensor)]
    if rest:
        ref_rest = torch.autograd.grad(ref_loss_total, rest, allow_unused=True)  # type: ignore[arg-type]
        for got, ref in zip(grads[1:], ref_rest):
            torch.testing.assert_close(got, ref, **TOL)
    return target


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- convolution -------------------------------------------------------------------------------
# Catches: an ignored (or default) stride, padding, dilation, groups or padding_mode; a depthwise
# conv whose groups are not multiplied by B; a dropped per-sample bias; a bias taken from sample 0.
CONVS = {
    "1d_stride_pad": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (5, 4, 11)),
    "1d_same_dilated_reflect": (
        lambda: nn.Conv1d(4, 6, 3, padding="same", dilation=2, padding_mode="reflect"),
        (5, 4, 9),
    ),
    "1d_valid_nobias": (lambda: nn.Conv1d(4, 2, 4, padding="valid", bias=False), (3, 4, 8)),
    "2d_all_args_groups": (
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, bias=False),
        (4, 4, 7, 6),
    ),
    "2d_depthwise_circular": (
        lambda: nn.Conv2d(4, 4, 3, groups=4, padding="same", padding_mode="circular"),
        (3, 4, 5, 5),
    ),
    "2d_depthwise_x2_dilated": (lambda: nn.Conv2d(4, 8, 3, groups=4, padding=2, dilation=2), (3, 4, 6, 6)),
    "2d_replicate_stride": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="replicate"), (3, 3, 6, 7)),
    "3d_stride_groups": (lambda: nn.Conv3d(2, 4, 2, stride=(1, 2, 1), padding=1, groups=2), (3, 2, 4, 5, 3)),
    "3d_dilated_nobias": (lambda: nn.Conv3d(2, 3, 2, dilation=2, bias=False), (2, 2, 5, 5, 5)),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv(name: str) -> None:
    build, shape = CONVS[name]
    check_against_loop(build().double(), _x(*shape))


@pytest.mark.parametrize("generate", ["weight", "bias"])
def test_conv_shared_weight_or_shared_bias(generate: str) -> None:
    # Catches: a rule that expands a shared tensor wrongly (e.g. treats a shared [C] bias as [B, ...]).
    conv = nn.Conv2d(4, 6, 3, groups=2, padding=1).double()
    check_against_loop(conv, _x(3, 4, 5, 5), generate=generate)


# -- linear ------------------------------------------------------------------------------------
# Catches: a dropped or shared-only bias, leading dimensions folded into the batch (every sample
# would then see the wrong weights), a transposed weight.
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 7), (3, 2, 4, 7)])
def test_linear(bias: bool, shape: tuple[int, ...]) -> None:
    check_against_loop(nn.Linear(7, 4, bias=bias).double(), _x(*shape))


def test_linear_shared_weight_per_sample_bias() -> None:
    # Catches: the shared-weight branch adding sample 0's bias to everyone, or no bias at all.
    check_against_loop(nn.Linear(7, 4).double(), _x(5, 3, 7), generate="bias")


def test_linear_sequence_first_batch_dim_1() -> None:
    # Catches: a batched Linear that assumes the batch is dim 0 (x: [T, B, F]).
    check_against_loop(nn.Linear(6, 3).double(), _x(4, 5, 6), batch_dim=1)


# -- normalisation -----------------------------------------------------------------------------
def _bn_with_stats(bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():  # non-trivial running statistics, so eval mode really uses them
        bn.running_mean.copy_(torch.linspace(-1, 1, bn.num_features))
        bn.running_var.copy_(torch.linspace(0.5, 2, bn.num_features))
    return bn


BNS = {
    "1d_flat": (lambda: nn.BatchNorm1d(3), (6, 3)),
    "1d_seq": (lambda: nn.BatchNorm1d(3, momentum=0.3), (6, 3, 4)),
    "1d_cumulative": (lambda: nn.BatchNorm1d(3, momentum=None), (6, 3, 4)),
    "2d": (lambda: nn.BatchNorm2d(4, eps=1e-3), (5, 4, 3, 3)),
}


# Catches: per-sample statistics instead of the batch's (train), batch statistics in eval, the
# running statistics updated per sample or not at all or with the wrong momentum / unbiased
# variance, a per-sample affine applied on the wrong axis.
@pytest.mark.parametrize("name", list(BNS))
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(name: str, training: bool) -> None:
    build, shape = BNS[name]
    bn = _bn_with_stats(build().double()).train(training)
    plain = copy.deepcopy(bn)  # an ordinary module run once on the same batch: the expected update
    x = _x(*shape) * 2 + 1
    target = check_against_loop(bn, x, whole_batch=training)
    with torch.no_grad():
        plain(x)
    after = target.materialize(target.initial_weights())  # a copy with the target's buffers
    for buf in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(after, buf), getattr(plain, buf), **TOL)
    if training:
        assert int(after.num_batches_tracked) == 1  # one forward with per-sample weights: one update


# Catches: a LayerNorm whose per-sample affine is aligned with the wrong dims (multi-dim shapes),
# that applies a bias when bias=False, or drops the shared part when only one tensor is generated.
LNS = {
    "2d_shape": (lambda: nn.LayerNorm((3, 4)), (5, 2, 3, 4), None),
    "3d_shape_on_4d": (lambda: nn.LayerNorm((2, 3, 4)), (3, 2, 3, 4), None),
    "no_bias": (lambda: nn.LayerNorm((3, 4), bias=False), (4, 5, 3, 4), None),
    "weight_only_generated": (lambda: nn.LayerNorm((3, 4), eps=1e-2), (4, 3, 4), "weight"),
    "bias_only_generated": (lambda: nn.LayerNorm(4), (4, 5, 4), "bias"),
}


@pytest.mark.parametrize("name", list(LNS))
def test_layer_norm(name: str) -> None:
    build, shape, generate = LNS[name]
    check_against_loop(build().double(), _x(*shape), generate=generate)


def test_layer_norm_without_affine_has_nothing_to_generate() -> None:
    with pytest.raises(ValueError):
        hn.TargetNetwork(nn.LayerNorm(4, elementwise_affine=False))


# Catches: group statistics computed over the wrong channels (g > 1), the affine per group not per
# channel, spatial dims ignored.
@pytest.mark.parametrize(("groups", "shape"), [(3, (4, 6, 5)), (2, (3, 6, 2, 3)), (6, (3, 6, 4))])
def test_group_norm(groups: int, shape: tuple[int, ...]) -> None:
    check_against_loop(nn.GroupNorm(groups, 6).double(), _x(*shape))


# -- embedding ---------------------------------------------------------------------------------
# Catches: rows looked up in sample 0's table, and a padding row that receives a gradient (an
# ordinary Embedding gives padding_idx a zero gradient).
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(padding_idx: int | None) -> None:
    emb = nn.Embedding(10, 4, padding_idx=padding_idx).double()
    ids = torch.randint(0, 10, (5, 6), generator=torch.Generator().manual_seed(3))
    ids[:, 0] = 0
    ids[:, 1] = 9  # both ends of the table, so both padding choices are hit
    check_against_loop(emb, ids)


@pytest.mark.parametrize("kwargs", [{"max_norm": 1.0}, {"scale_grad_by_freq": True}])
def test_embedding_unsupported_options_raise_under_batched(kwargs: dict[str, Any]) -> None:
    # Catches: silently ignoring max_norm (which renormalises rows in place) or scale_grad_by_freq.
    target = hn.TargetNetwork(nn.Embedding(10, 4, **kwargs), engine="batched")
    w = target.initial_weights().expand(3, -1).clone()
    with pytest.raises(NotImplementedError, match="Embedding"):
        target(torch.randint(0, 10, (3, 4)), w)


def test_embedding_scale_grad_by_freq_falls_back_and_equals_loop() -> None:
    # Under engine="auto" the option without a batched rule runs under vmap: gradients scaled by each
    # sample's own id counts, as its materialized module would have them.
    ids = torch.tensor([[1, 1, 1, 2], [3, 4, 4, 5], [0, 0, 9, 9]])
    target = check_against_loop(nn.Embedding(10, 4, scale_grad_by_freq=True).double(), ids)
    assert target.engine == "vmap" and "embedding" in target.engine_reason.lower()  # the fallback ran


# -- recurrent ---------------------------------------------------------------------------------
def _rnn_split(batch_first: bool, lstm: bool) -> Split:
    def split(out: Any) -> list[Tensor]:
        seq, hidden = out
        states = list(hidden) if lstm else [hidden]
        return [seq if batch_first else seq.transpose(0, 1)] + [h.transpose(0, 1) for h in states]

    return split


# Catches: a wrong gate order, a reversed direction that is not reversed back, layers stacked on the
# wrong direction's output, h_n/c_n in the wrong order, a missing b_hh (GRU's r * (W_hn h + b_hn)),
# batch_first=False handled as batch-first.
@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn(cell: type[nn.Module], bidirectional: bool, batch_first: bool, bias: bool) -> None:
    rnn = cell(3, 4, num_layers=2, bias=bias, batch_first=batch_first, bidirectional=bidirectional).double()
    x = _x(5, 6, 3) if batch_first else _x(6, 5, 3)
    split = _rnn_split(batch_first, cell is nn.LSTM)
    check_against_loop(rnn, x, batch_dim=0 if batch_first else 1, split=split)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_elman_rnn(nonlinearity: str, bidirectional: bool) -> None:
    # Catches: relu and tanh cells swapped, the Elman path's biases or directions mishandled.
    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, batch_first=True, bidirectional=bidirectional)
    check_against_loop(rnn.double(), _x(5, 6, 3), split=_rnn_split(True, False))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_with_projection(bidirectional: bool) -> None:
    # Catches: the projection w_hr (proj_size) skipped, which changes h and every later step.
    rnn = nn.LSTM(3, 4, num_layers=2, proj_size=2, batch_first=True, bidirectional=bidirectional).double()
    check_against_loop(rnn, _x(5, 6, 3), split=_rnn_split(True, True))


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
def test_rnn_with_initial_state_and_shared_weights(cell: type[nn.Module]) -> None:
    # Catches: an initial state ignored (zeros used), or shared weights with per-sample biases mixed up.
    rnn = cell(3, 4, num_layers=2, batch_first=True, bidirectional=True).double()
    h0 = _x(4, 5, 4, seed=5)  # [layers * dirs, B, H]: the batch is dim 1 of RNN states
    extra: Any = (h0, _x(4, 5, 4, seed=6)) if cell is nn.LSTM else h0
    split = _rnn_split(True, cell is nn.LSTM)
    check_against_loop(rnn, _x(5, 6, 3), generate="bias*", split=split, extra=(extra,), extra_dims=(1,))


def test_rnn_dropout_in_training_matches_loop_with_the_same_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout between RNN layers in training: the engine draws the masks; they are recorded, then
    every sample is recomputed layer by layer from its materialized module with the same mask.
    Catches: dropout skipped, applied after the last layer too, without the 1/(1-p) scaling, or
    with one mask shared by every sample."""
    p, layers, B = 0.4, 3, 6
    rnn = nn.GRU(3, 5, num_layers=layers, dropout=p, batch_first=True).double().train()
    target = hn.TargetNetwork(rnn)
    masks: list[Tensor] = []
    real = F.dropout

    def recording(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
        out = real(input, p, training, inplace)
        masks.append((out != 0).to(input.dtype) / (1 - p))
        return out

    monkeypatch.setattr(F, "dropout", recording)
    x = _x(B, 7, 3)
    w = _weights(target, B)
    out, h_n = target(x, w)
    assert len(masks) == layers - 1, "the engine no longer draws its dropout masks with F.dropout: update this test"
    assert not torch.equal(masks[0][0], masks[0][1])  # every sample its own mask
    # p = 0.4 over 2 x 6 x 7 x 5 = 420 entries: the dropped fraction has sd 0.024; 5 sd either side
    dropped = float(torch.cat([m.flatten() for m in masks]).eq(0).double().mean())
    assert 0.28 < dropped < 0.52, dropped
    for i in range(B):
        m = target.materialize(w[i].detach())
        params = dict(m.named_parameters())
        h = x[i : i + 1]
        finals = []
        for k in range(layers):
            one = nn.GRU(h.shape[-1], 5, batch_first=True).double()
            with torch.no_grad():
                for leaf in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(one, f"{leaf}_l0").copy_(params[f"{leaf}_l{k}"])
            h, hk = one(h)
            finals.append(hk)
            if k < layers - 1:
                h = h * masks[k][i : i + 1]
        torch.testing.assert_close(out[i : i + 1], h, **TOL)
        torch.testing.assert_close(h_n[:, i : i + 1], torch.cat(finals), **TOL)
    # eval mode: no dropout at all, so the loop of plain modules applies directly
    masks.clear()
    rnn.eval()
    check_against_loop(rnn, x, split=_rnn_split(True, False))
    assert masks == []


# -- the vmap engine, and which path runs ------------------------------------------------------
class _Scale(nn.Module):
    """A layer the batched engine does not know (a raw parameter used by `*`): forces vmap."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, n))
        self.shift = nn.Linear(n, n)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.shift(x) * self.weight)


# Catches: vmap mapping over dim 0 when the batch is dim 1, or outputs stacked on the wrong dim.
def test_vmap_engine_with_batch_dim_1() -> None:
    check_against_loop(_Scale(4).double(), _x(3, 5, 4), batch_dim=1, expect_engine="vmap")
    check_against_loop(nn.Linear(4, 2).double(), _x(3, 5, 4), batch_dim=1, engine="vmap", expect_engine="vmap")


def test_vmap_engine_with_batch_dim_0_and_partial_generation() -> None:
    check_against_loop(_Scale(4).double(), _x(5, 3, 4), generate="weight", expect_engine="vmap")


class _Counter:
    def __init__(self) -> None:
        self.calls = 0


def test_which_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`[1, P]` and `[P]` take the shared path (neither per-sample engine), `[B, P]` the chosen one.
    Catches: the single-set shortcut dropped (B=1 through the batched engine) or an engine choice
    that is reported but not used."""
    batched, vmapped = _Counter(), _Counter()
    real_init = batched_ops.PerSampleMode.__init__
    real_vmap = torch.func.vmap

    def counting_init(self: Any, *a: Any, **k: Any) -> None:
        batched.calls += 1
        real_init(self, *a, **k)

    def counting_vmap(*a: Any, **k: Any) -> Any:
        vmapped.calls += 1
        return real_vmap(*a, **k)

    import hypernet.target as target_mod

    monkeypatch.setattr(batched_ops.PerSampleMode, "__init__", counting_init)
    monkeypatch.setattr(target_mod, "vmap", counting_vmap)
    lin = nn.Linear(4, 3).double()
    for engine, counter in (("batched", batched), ("vmap", vmapped)):
        target = hn.TargetNetwork(lin, engine=engine)  # type: ignore[arg-type]
        w = target.initial_weights()
        before = (batched.calls, vmapped.calls)
        target(_x(1, 4), w.unsqueeze(0))
        target(_x(3, 4), w)
        assert (batched.calls, vmapped.calls) == before, f"{engine}: a shared weight set ran a per-sample engine"
        target(_x(3, 4), w.expand(3, -1))
        assert counter.calls == (before[0] if counter is batched else before[1]) + 1
