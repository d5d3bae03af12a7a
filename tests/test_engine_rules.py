"""The per-sample engine's rules called directly, the way a user's own module (or `register_rule`)
meets them: `F.*` calls that leave arguments at their defaults, metadata of per-sample tensors,
wrong batch sizes, and which module an unsupported call is blamed on. References are loops over
the samples with plain `F.*` calls (float64: the batched and looped forms differ by summation
order only, ~1e-15; 1e-12 leaves room for that and nothing else, while an error in eps or in a row
lookup moves the result by >1e-3)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.batched_ops import NoBatchedRule, PerSampleMode, supports, vmap_modules

TOL: dict[str, Any] = dict(atol=1e-12, rtol=1e-12)


def _rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("eps", [None, 0.5])
def test_group_norm_called_directly_with_and_without_eps(eps: float | None) -> None:
    B, C = 3, 4
    x, w, b = _rand(B, C, 5), _rand(B, C, seed=1), _rand(B, C, seed=2)
    kw = {} if eps is None else {"eps": eps}
    with PerSampleMode([w, b], B):
        got = F.group_norm(x, 2, w, b, **kw)
    want = torch.cat([F.group_norm(x[i : i + 1], 2, w[i], b[i], **kw) for i in range(B)])
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("eps", [None, 0.5])
def test_layer_norm_and_batch_norm_called_directly_with_and_without_eps(eps: float | None) -> None:
    B = 3
    x, w, b = _rand(B, 2, 4), _rand(B, 4, seed=1), _rand(B, 4, seed=2)
    kw = {} if eps is None else {"eps": eps}
    with PerSampleMode([w, b], B):
        got = F.layer_norm(x, (4,), w, b, **kw)
    want = torch.cat([F.layer_norm(x[i : i + 1], (4,), w[i], b[i], **kw) for i in range(B)])
    torch.testing.assert_close(got, want, **TOL)
    # batch norm: statistics over the whole batch, each sample's own scale and shift
    xb, wb, bb = _rand(B, 4, 5, seed=3), _rand(B, 4, seed=4), _rand(B, 4, seed=5)
    mean, var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    with PerSampleMode([wb, bb], B):
        got = F.batch_norm(xb, mean.clone(), var.clone(), wb, bb, True, **kw)
    plain = F.batch_norm(xb, mean.clone(), var.clone(), None, None, True, **kw)
    want = torch.stack([plain[i] * wb[i][:, None] + bb[i][:, None] for i in range(B)])
    torch.testing.assert_close(got, want, **TOL)


def test_embedding_called_directly_with_the_defaults() -> None:
    B = 3
    table = _rand(B, 6, 2)
    ids = torch.tensor([[0, 5, 5], [1, 2, 3], [4, 4, 0]])
    with PerSampleMode([table], B):
        got = F.embedding(ids, table)  # no padding_idx, max_norm, scale_grad_by_freq or sparse given
    want = torch.stack([F.embedding(ids[i], table[i]) for i in range(B)])
    assert torch.equal(got, want)  # a lookup: exact


def test_embedding_options_without_a_rule_are_blamed_on_the_module() -> None:
    class Lookup(nn.Module):
        def forward(self, ids: Tensor, table: Tensor) -> Tensor:
            return F.embedding(ids, table, max_norm=1.0)

    table, lookup = _rand(2, 5, 3), Lookup()
    with PerSampleMode([table], 2), pytest.raises(NoBatchedRule) as err:
        lookup(torch.zeros(2, 3, dtype=torch.long), table)
    assert str(err.value).startswith("per-sample weights: Embedding with max_norm")
    assert err.value.op == "embedding" and err.value.module is lookup and err.value.fatal is False


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda x, w, v, k: F.linear(x, w), "linear"),
        (lambda x, w, v, k: F.conv1d(x[..., None].expand(-1, -1, 3), k), "conv"),
        (lambda x, w, v, k: F.batch_norm(x, None, None, v, None, True), "batch_norm"),
        (lambda x, w, v, k: F.layer_norm(x, (2,), v), "layer_norm"),
        (lambda x, w, v, k: F.group_norm(x, 1, v), "group_norm"),
        (lambda x, w, v, k: F.embedding(x.long(), w), "embedding"),
    ],
    ids=["linear", "conv", "batch_norm", "layer_norm", "group_norm", "embedding"],
)
def test_a_wrong_batch_size_names_the_rule(call: object, name: str) -> None:
    B = 3
    w = _rand(B, 2, 2)  # a weight matrix (or table) per sample
    v, k = w[:, 0].clone(), w[..., None].clone()  # a vector and a conv kernel [B, 2, 2, 1] per sample
    x = _rand(B + 1, 2)  # four rows for three weight sets
    with PerSampleMode([w, v, k], B), pytest.raises(ValueError) as err:
        call(x, w, v, k)  # type: ignore[operator]
    assert str(err.value).startswith(f"per-sample weights: {name} input has 4 rows along dim 0, expected the batch")


@pytest.mark.parametrize(("cell", "name"), [(nn.GRU, "gru"), (nn.LSTM, "lstm"), (nn.RNN, "rnn_tanh")])
def test_a_wrong_batch_size_names_the_recurrent_cell(cell: type[nn.Module], name: str) -> None:
    rnn = cell(2, 3, batch_first=True).double()
    params = [p.detach().expand(3, *p.shape).clone() for p in rnn.parameters()]
    names = [n for n, _ in rnn.named_parameters()]
    with PerSampleMode(params, 3), pytest.raises(ValueError, match=f"^per-sample weights: {name} input has 4 rows"):
        torch.func.functional_call(rnn, dict(zip(names, params)), (_rand(4, 5, 2),))


def test_metadata_of_a_per_sample_tensor_is_one_samples() -> None:
    B = 4
    w = _rand(B, 3, 5)
    scalar = _rand(B)  # one 0-d value per sample
    mode = PerSampleMode([w, scalar], B)
    with mode:
        assert w.shape == (3, 5) and w.ndim == 2 and w.dim() == 2 and w.ndimension() == 2
        assert w.size() == (3, 5) and w.size(1) == 5 and w.size(-2) == 3
        assert w.numel() == 15 and w.nelement() == 15 and len(w) == 3
        assert w.dtype == torch.float64 and w.is_floating_point() and w.element_size() == 8
        with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
            len(scalar)
        data = w.data  # read as detach(): itself per-sample, so its shape is one sample's too
        assert data.shape == (3, 5) and mode.is_ps(data)
        mode.paused = True  # paused: every call runs as plain torch
        assert w.shape == (B, 3, 5) and len(w) == B
        mode.paused = False
    assert torch.equal(data, w) and not data.requires_grad


def test_unsupported_calls_are_blamed_on_the_innermost_module() -> None:
    def helper(t: Tensor) -> Tensor:  # not a module: the search walks on to the forward that called it
        return t.mT

    class Reads(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            return t.T

    class ReadsViaHelper(nn.Module):
        def forward(self, t: Tensor) -> Tensor:
            return helper(t)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Reads()

        def forward(self, t: Tensor) -> Tensor:
            return self.inner.forward(t)  # called directly: the next frame up is Outer's, not inner's __call__

    w = _rand(2, 3, 4)
    outer, via = Outer(), ReadsViaHelper()
    with PerSampleMode([w], 2):
        with pytest.raises(NoBatchedRule) as err:
            outer(w)
        assert err.value.module is outer.inner and err.value.op == "T" and not err.value.fatal
        assert "'T' received a generated tensor in Reads.forward" in str(err.value)
        with pytest.raises(NoBatchedRule) as err:
            via(w)
        assert err.value.module is via
        assert "'mT' received a generated tensor in ReadsViaHelper.forward" in str(err.value)
        with pytest.raises(NoBatchedRule) as err:
            torch.matmul(w, w)  # outside any module
        assert err.value.module is None and err.value.op == "matmul"
        assert str(err.value).startswith("per-sample weights: 'matmul' received a generated tensor and has no")


class _Scale(nn.Module):
    """Not a layer type the engine knows: it reads its parameter its own way."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(3))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.s


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = _Scale()
        self.t = nn.Parameter(torch.zeros(3))
        self.lin = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.scale(x)) + self.t


def test_vmap_modules_keeps_only_the_outermost_unknown_owners() -> None:
    block = "_Block is not a layer type with batched rules"
    scale = "_Scale is not a layer type with batched rules"
    # the whole module is unknown: "" contains everything
    assert vmap_modules(_Block(), ["t", "scale.s", "lin.weight"]) == {"": block}
    # a known layer inside an unknown one needs no vmap of its own
    assert vmap_modules(_Block(), ["lin.weight"]) == {}
    assert vmap_modules(_Block(), ["scale.s", "lin.weight"]) == {"scale": scale}
    # "1.scale" lies inside "1"; "10" does not lie inside "1" (a name prefix is not a parent)
    seq = nn.Sequential(nn.Linear(3, 3), *[_Block() for _ in range(10)])
    got = vmap_modules(seq, ["0.weight", "1.t", "1.scale.s", "10.scale.s", "10.lin.bias"])
    assert got == {"1": block, "10.scale": scale}
    assert vmap_modules(seq, ["1.scale.s", "1.t"]) == {"1": block}  # the order of discovery does not matter
    assert not supports(seq, ["1.t"]) and supports(seq, ["0.weight", "3.lin.bias"])


@pytest.mark.parametrize(("conv", "dims"), [(F.conv1d, "L"), (F.conv2d, "H, W"), (F.conv3d, "D, H, W")])
def test_an_unbatched_conv_input_is_refused_with_the_fix(conv: object, dims: str) -> None:
    spatial = dims.count(",") + 1
    k = _rand(2, 3, 2, *[1] * spatial)  # [B, C_out, C_in, 1, ...]
    x = _rand(2, *[4] * spatial)  # [C_in, ...]: one channel axis short of [B, C, ...]
    with PerSampleMode([k], 2), pytest.raises(ValueError) as err:
        conv(x, k)  # type: ignore[operator]
    assert str(err.value) == (
        f"per-sample weights: conv{spatial}d needs a batched input [B, C, {dims}] with one sample per weight set, "
        f"got shape {list(x.shape)}; an unbatched input needs x.unsqueeze(0) (and weights [1, P] or [P])"
    )


@pytest.mark.parametrize(("cell", "name"), [(nn.GRU, "gru"), (nn.LSTM, "lstm"), (nn.RNN, "rnn_tanh")])
def test_a_packed_recurrent_input_has_no_batched_rule(cell: type[nn.Module], name: str) -> None:
    rnn = cell(2, 3).double()
    params = [p.detach().expand(2, *p.shape).clone() for p in rnn.parameters()]
    names = [n for n, _ in rnn.named_parameters()]
    with PerSampleMode(params, 2), pytest.raises(NoBatchedRule) as err:
        # a packed sequence reaches the rule as its 2-D data (its batch axis is gone)
        packed = nn.utils.rnn.pack_padded_sequence(_rand(2, 5, 2), torch.tensor([5, 3]), enforce_sorted=False)
        torch.func.functional_call(rnn, dict(zip(names, params)), (packed,))
    assert str(err.value) == "per-sample weights: RNNs need a batched, unpacked 3-D input for the batched rule"
    assert err.value.op == name and err.value.module is rnn


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_embedding_with_padding_keeps_the_tables_dtype(dtype: torch.dtype) -> None:
    # the padding row is masked by multiplying with 0/1: exact in every dtype, and the result must
    # stay in the table's dtype (a float32 mask would promote a float16 table)
    B = 2
    table = _rand(B, 5, 3).to(dtype)
    ids = torch.tensor([[0, 4, 0], [2, 0, 1]])
    with PerSampleMode([table], B):
        got = F.embedding(ids, table, padding_idx=0)
    want = torch.stack([F.embedding(ids[i], table[i], padding_idx=0) for i in range(B)])
    assert got.dtype == dtype and torch.equal(got, want)  # a lookup: exact


def test_embedding_with_padding_stays_on_the_tables_device() -> None:
    # meta tensors carry shapes only; a mask made on the CPU could not multiply them
    table = torch.empty(2, 5, 3, device="meta")
    with PerSampleMode([table], 2):
        got = F.embedding(torch.zeros(2, 4, dtype=torch.long, device="meta"), table, padding_idx=1)
    assert got.device.type == "meta" and got.shape == (2, 4, 3)


def test_adopted_tensors_are_kept_alive_so_ids_stay_unique() -> None:
    # the engine recognises per-sample tensors by id(); a derived one (`w.data`) that the caller drops
    # must stay referenced, or a new tensor could be born at its address and be taken for per-sample
    w = _rand(2, 3)
    mode = PerSampleMode([w], 2)
    with mode:
        for _ in range(100):
            w.data  # noqa: B018  (adopted, then dropped here)
        fresh = [torch.zeros(3) for _ in range(300)]
        assert not any(mode.is_ps(t) for t in fresh)


def _prelu(ctx: PerSampleMode, input: Tensor, weight: Tensor) -> Tensor:
    w = ctx.batched(weight).reshape(ctx.B, -1, *[1] * (input.ndim - 2))
    return torch.where(input >= 0, input, w * input)


def test_register_and_unregister_a_rule() -> None:
    from hypernet.batched_ops import known, register_rule, unregister_rule

    x, slope = _rand(2, 3, 4), _rand(2, 3, seed=1)
    want = torch.stack([F.prelu(x[i : i + 1], slope[i])[0] for i in range(2)])
    for bad in [(F.prelu, "not callable"), ("not callable", _prelu)]:
        with pytest.raises(TypeError, match="must be callable"):
            register_rule(*bad)  # type: ignore[arg-type]
    register_rule(F.prelu, _prelu, modules=[nn.PReLU, nn.Hardtanh])  # a list of module types
    try:
        assert known(nn.PReLU(3)) and known(nn.Hardtanh())
        with PerSampleMode([slope], 2):
            torch.testing.assert_close(F.prelu(x, slope), want, **TOL)
    finally:
        unregister_rule(F.prelu, [nn.PReLU, nn.Hardtanh])
    assert not known(nn.PReLU(3)) and not known(nn.Hardtanh())
    with PerSampleMode([slope], 2), pytest.raises(NoBatchedRule, match="prelu"):
        F.prelu(x, slope)  # the rule is gone
    unregister_rule(F.hardtanh, [nn.Hardtanh])  # never registered: nothing to undo, no error
    register_rule(F.prelu, _prelu, modules=nn.PReLU)  # a single type
    try:
        assert known(nn.PReLU(3))
    finally:
        unregister_rule(F.prelu, [nn.PReLU])


def test_attention_and_its_ancestors_run_under_vmap_as_one() -> None:
    fused = "MultiheadAttention reads its layers' weights in a fused kernel"
    seq = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 2))
    # out_proj is a Linear the engine knows, but attention reads it inside its fused kernel
    assert vmap_modules(seq, ["0.weight", "1.out_proj.weight"]) == {"1": fused}
    deep = nn.Sequential(nn.Sequential(nn.MultiheadAttention(4, 2)))
    assert vmap_modules(deep, ["0.0.out_proj.weight", "0.0.in_proj_weight"]) == {"0.0": fused}
    # attention's own parameter at the top: an unknown layer, not an ancestor reading a child's
    assert vmap_modules(nn.MultiheadAttention(4, 2), ["in_proj_weight"]) == {
        "": "MultiheadAttention is not a layer type with batched rules"
    }


def test_the_no_rule_message_in_full_and_for_unnamed_functions() -> None:
    from torch.overrides import handle_torch_function

    class Unnamed:  # a callable without __name__, as handle_torch_function may pass one
        def __call__(self, t: Tensor) -> Tensor:
            return t

        def __repr__(self) -> str:
            return "Unnamed()"

    w = _rand(2, 3, 5)
    with PerSampleMode([w], 2):
        with pytest.raises(NoBatchedRule) as err:
            handle_torch_function(Unnamed(), (w,), w)
        assert err.value.op == "Unnamed()" and str(err.value) == (
            "per-sample weights: Unnamed() received a generated tensor and has no batched rule (it would broadcast "
            "over the batch of weight sets); engine='auto' runs such a module under vmap, or teach the engine "
            "with hn.register_rule"
        )
        # a property defined in Python (no __name__ on `property` before Python 3.13)
        with pytest.raises(NoBatchedRule) as err:
            w.__cuda_array_interface__  # noqa: B018
        assert err.value.op in {"__get__", "__cuda_array_interface__"}
        assert w.size(dim=1) == 5 and w.size(dim=-2) == 3  # the dimension given by keyword


@pytest.mark.parametrize("conv", [F.conv1d, F.conv2d, F.conv3d])
def test_conv_called_directly_with_the_defaults(conv: object) -> None:
    # F.conv*d are builtins: a direct call hands the engine only the arguments given, so the rule's
    # own defaults (stride 1, padding 0, dilation 1, groups 1) decide the result
    spatial = [F.conv1d, F.conv2d, F.conv3d].index(conv) + 1  # type: ignore[arg-type]
    B = 2
    x = _rand(B, 4, *[5] * spatial)
    k = _rand(B, 6, 4, *[3] * spatial, seed=1)
    with PerSampleMode([k], B):
        got = conv(x, k)  # type: ignore[operator]
    want = torch.cat([conv(x[i : i + 1], k[i]) for i in range(B)])  # type: ignore[operator]
    torch.testing.assert_close(got, want, **TOL)
