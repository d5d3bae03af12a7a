"""The hypernetwork designs: shapes, parameter counts, HyperModel use; then (the second part)
every design against a forward pass written out here from its raw parameters
(issue #11, mutation testing of `hypernetworks/`): the trunk layer by layer (standard or NTK
dense layers with the variances set here, LayerNorm by its formula, tanh), MIP's cos|sin encoding,
the chunk / tensor embeddings appended per chunk or tensor, the chunked output's per-element scale,
the low-rank layout `U Vᵀ` block by block, `theta0` added for residual designs.

The expected values never go through the design's own forward: one condition at a time, in a
Python loop, in float64, so 1e-12 is far below any real error (a wrong layer, order, scale or
block changes outputs by O(0.01) or more). Every parameter is perturbed first, so that zero biases,
unit norm scales or a zero output head cannot hide a term.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.layers import NTKLinear


def _target() -> hn.TargetNetwork:
    module = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20, bias=False), nn.LayerNorm(20))
    return hn.TargetNetwork(module)


@pytest.mark.parametrize("mode", ["hyperfan_in", "hyperfan_out"])
def test_hyperfan_variance_matches_intended(mode: str) -> None:
    """Generated weights have the variance a directly initialised layer would have, within 10%."""
    target = _target()
    spec = target.spec
    samples = []
    for seed in range(200):  # many draws of the hypernetwork and of the condition
        torch.manual_seed(seed)
        hyper = hn.MLPHyperNetwork(16, spec, hidden=(64, 64), init=mode)
        emb = hn.TaskEmbedding(4, 16)  # N(0, 1): unit second moment, as hyperfan assumes
        with torch.no_grad():
            samples.append(hyper(emb(torch.arange(4))))
    theta = torch.cat(samples)
    for info in spec.tensors:
        block = theta[:, info.offset : info.stop]
        if info.role == "norm_weight":
            assert torch.allclose(block, torch.ones_like(block))
            continue
        if info.role == "norm_bias":
            assert torch.allclose(block, torch.zeros_like(block))
            continue
        fan = info.fan_in if mode == "hyperfan_in" else info.fan_out
        intended = (0.5 if info.has_bias else 1.0) / fan if info.role == "weight" else 0.5
        measured = float(block.pow(2).mean())
        assert abs(measured / intended - 1) < 0.10, (info.name, measured, intended)


def test_mlp_hypernetwork_shapes_and_parameter_count() -> None:
    target = _target()
    hyper = hn.MLPHyperNetwork(8, target.spec, hidden=(32,))
    assert hyper(torch.rand(5, 8)).shape == (5, target.spec.numel)
    assert hyper(torch.rand(8)).shape == (target.spec.numel,)
    assert hyper.num_generated == target.spec.numel
    assert hyper.num_parameters() == (8 * 32 + 32) + (32 * target.spec.numel + target.spec.numel)
    with pytest.raises(ValueError, match=r"cond: expected shape \[..., 8\], got \[5, 7\]"):
        hyper(torch.rand(5, 7))


def test_hypermodel_shared_and_per_sample() -> None:
    target = _target()
    model = hn.HyperModel(target, hn.MLPHyperNetwork(6, target.spec, hidden=(16,)), hn.TaskEmbedding(3, 6))
    x = torch.randn(4, 30)
    shared = model(x, torch.tensor(1))
    assert model.weights(torch.tensor(1)).shape == (target.spec.numel,)
    ids = torch.tensor([1, 1, 1, 1])
    torch.testing.assert_close(model(x, ids), shared, atol=1e-6, rtol=1e-6)
    ids = torch.tensor([0, 2, 1, 0])
    per = model(x, ids)
    for i in range(4):
        torch.testing.assert_close(per[i], model.materialize(ids[i])(x[i]), atol=1e-5, rtol=1e-5)
    # trains: the loss falls
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    y = torch.randn(4, 20)
    losses = []
    for _ in range(30):
        loss = (model(x, ids) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="task ids: must lie in \\[0, 2\\]"):
        model(x, torch.tensor([0, 3, 1, 0]))


def test_hypermodel_rejects_mismatched_spec() -> None:
    target = _target()
    other = hn.ParamSpec({"w": (3, 3)})
    with pytest.raises(ValueError, match="differs from the target's"):
        hn.HyperModel(target, hn.MLPHyperNetwork(4, other))


# -- every design against its formula ----------------------------------------------------------
TOL: dict[str, Any] = dict(atol=1e-12, rtol=1e-12)
IN = 3


def _spec() -> hn.ParamSpec:
    # with rank 2: Linear(6, 5) and the conv (6 x 2*3) are factored, Linear(3, 4) is too small
    # (2 * (4 + 3) >= 12) and generated whole, as are the vectors
    module = nn.ModuleList([nn.Linear(6, 5), nn.Conv1d(2, 6, 3), nn.Linear(3, 4, bias=False), nn.LayerNorm(4)])
    return hn.TargetNetwork(module).spec


# (parametrization, constructor options): each case changes what the trunk or the output is
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "standard-layernorm": ("standard", dict(hidden=(5,), norm="layer")),
    "standard-linear": ("standard", dict(hidden=())),
    "standard-residual": ("standard", dict(hidden=(5,), residual=True)),
    "ntk": ("ntk", dict(hidden=(5, 6), weight_var=1.5, bias_var=0.3)),
    "mip": ("mip", dict(hidden=(5,))),
    "mip-no-encoding": ("mip", dict(hidden=(5,), encoding=None)),
}
DESIGNS = {
    "mlp": (hn.MLPHyperNetwork, {}),
    "chunked": (hn.ChunkedHyperNetwork, dict(chunk_size=10, chunk_dim=3)),
    "layerwise": (hn.LayerwiseHyperNetwork, dict(embedding_dim=3)),
    "lowrank": (hn.LowRankHyperNetwork, dict(rank=2)),
}


def _dense(layer: nn.Module, x: Tensor, parametrization: str, opts: dict[str, Any]) -> Tensor:
    if parametrization == "ntk":  # sqrt(weight_var / fan_in) W x + sqrt(bias_var) b, W, b ~ N(0, 1)
        assert isinstance(layer, NTKLinear)
        fan_in = layer.weight.shape[1]
        return layer.weight @ x * math.sqrt(opts["weight_var"] / fan_in) + layer.bias * math.sqrt(opts["bias_var"])
    assert type(layer) is nn.Linear
    return layer.weight @ x + layer.bias


def _trunk(trunk: nn.Sequential, x: Tensor, parametrization: str, opts: dict[str, Any]) -> Tensor:
    """`x: [features]`: linear, (LayerNorm), tanh per hidden width."""
    layers = list(trunk)
    i = 0
    for width in opts["hidden"]:
        x = _dense(layers[i], x, parametrization, opts)
        assert x.shape == (width,)
        i += 1
        if opts.get("norm") == "layer":
            ln = layers[i]
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5) * ln.weight + ln.bias
            i += 1
        x = torch.tanh(x)
        i += 1
    assert i == len(layers)
    return x


def _reference(hyper: hn.HyperNetwork, design: str, z: Tensor, parametrization: str, opts: dict[str, Any]) -> Tensor:
    """The generated weights for one condition `z: [IN]`: `[P]`."""
    spec = hyper.spec
    h = z
    if parametrization == "mip" and opts.get("encoding", "default") is not None:
        h = torch.cat([torch.cos(math.pi / 2 * z), torch.sin(math.pi / 2 * z)])

    def run(inp: Tensor, head: nn.Module) -> Tensor:
        return _dense(head, _trunk(hyper.trunk, inp, parametrization, opts), parametrization, opts)

    if design == "mlp":
        out = run(h, hyper.head)
    elif design == "chunked":
        pieces = [run(torch.cat([h, e]), hyper.head) for e in hyper.chunk_embeddings]
        assert len(pieces) == math.ceil(spec.numel / 10)
        out = hyper.out_offset + hyper.out_scale * torch.cat(pieces)[: spec.numel]  # padding dropped
    elif design == "layerwise":
        out = torch.cat([run(torch.cat([h, e]), head) for e, head in zip(hyper.tensor_embeddings, hyper.heads)])
    else:
        g, at, parts = run(h, hyper.head), 0, []
        for t in spec:
            rows, cols = t.shape[0], t.numel // t.shape[0]
            r = min(2, rows, cols)
            if len(t.shape) >= 2 and r * (rows + cols) < t.numel:  # U: [rows, r], then V: [cols, r]
                U = g[at : at + rows * r].reshape(rows, r)
                V = g[at + rows * r : at + r * (rows + cols)].reshape(cols, r)
                parts.append((U @ V.T).flatten())
                at += r * (rows + cols)
            else:
                parts.append(g[at : at + t.numel])
                at += t.numel
        assert at == g.shape[0] == hyper.num_generated
        out = torch.cat(parts)
    if parametrization == "mip" or opts.get("residual") or design == "lowrank":
        out = out + hyper.theta0
    return out


def _build(design: str, case: str) -> tuple[hn.HyperNetwork, str, dict[str, Any]]:
    cls, extra = DESIGNS[design]
    parametrization, opts = CASES[case]
    kwargs = {k: v for k, v in opts.items() if not (design == "lowrank" and k == "residual")}
    torch.manual_seed(0)
    hyper = cls(IN, _spec(), activation="tanh", parametrization=parametrization, **extra, **kwargs).double()
    with torch.no_grad():
        for p in hyper.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return hyper, parametrization, opts


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("design", list(DESIGNS))
def test_design_equals_its_formula(design: str, case: str) -> None:
    hyper, parametrization, opts = _build(design, case)
    cond = torch.rand(2, 4, IN, dtype=torch.float64)  # two leading dimensions; in [0, 1] for MIP
    out = hyper(cond)
    assert out.shape == (2, 4, hyper.spec.numel)
    for i in range(2):
        for j in range(4):
            torch.testing.assert_close(out[i, j], _reference(hyper, design, cond[i, j], parametrization, opts), **TOL)
    torch.testing.assert_close(hyper(cond[1, 2]), out[1, 2], **TOL)  # an unbatched condition


@pytest.mark.parametrize("case", ["standard-layernorm", "ntk", "mip"])
def test_lowrank_factors_and_dense_parts(case: str) -> None:
    """`factorized` hands out the same U, V and whole tensors the formula uses, and W0 = theta0."""
    hyper, parametrization, opts = _build("lowrank", case)
    assert [b.rank for b in hyper.blocks] == [2, 0, 2, 0, 0, 0, 0]
    z = torch.rand(IN, dtype=torch.float64)
    fw = hyper.factorized(z)
    assert sorted(fw.factors) == ["0.weight", "1.weight"]
    theta0 = hyper.spec.unflatten(hyper.theta0)
    full = hyper.spec.unflatten(_reference(hyper, "lowrank", z, parametrization, opts))
    for name, (U, V) in fw.factors.items():
        rows = hyper.spec[name].shape[0]
        assert U.shape == (rows, 2) and V.shape == (hyper.spec[name].numel // rows, 2)
        torch.testing.assert_close(fw.base[name], theta0[name], rtol=0, atol=0)
        torch.testing.assert_close(theta0[name] + (U @ V.T).reshape(hyper.spec[name].shape), full[name], **TOL)
    assert sorted(fw.dense) == ["0.bias", "1.bias", "2.weight", "3.bias", "3.weight"]
    for name, value in fw.dense.items():
        torch.testing.assert_close(value, full[name], **TOL)


@pytest.mark.parametrize(("init", "residual"), [("hyperfan_in", False), ("hyperfan_out", True), ("mip", True)])
def test_chunked_output_scale_is_the_per_tensor_std(init: str, residual: bool) -> None:
    """A shared head cannot size its rows per tensor, so each output element is scaled by the std a
    directly initialised tensor would have (formulas of test_init_variance.py, written out here)."""
    spec = _spec()
    parametrization = "mip" if init == "mip" else "standard"
    opts = dict(residual=residual) if parametrization == "standard" else {}
    hyper = hn.ChunkedHyperNetwork(
        IN, spec, chunk_size=10, hidden=(7,), init=init, parametrization=parametrization, **opts
    )
    for t in spec:
        if t.role == "weight":
            fan = t.fan_in if init == "hyperfan_in" else t.fan_out
            var = (0.5 if t.has_bias else 1.0) / fan
        elif t.role == "bias":
            var = 0.5
        else:
            var = 0.0  # normalisation scales and shifts start exactly at 1 and 0
        if init == "mip":
            var = 2.0 * 7 / t.numel  # a layer of fan-out numel(t) fed by 7 hidden units
        torch.testing.assert_close(hyper.out_scale[t.offset : t.stop], torch.full((t.numel,), math.sqrt(var)))
        offset = 1.0 if t.role == "norm_weight" and not residual else 0.0
        torch.testing.assert_close(hyper.out_offset[t.offset : t.stop], torch.full((t.numel,), offset))
    default = hn.ChunkedHyperNetwork(IN, spec, chunk_size=10, hidden=(7,), init="default")
    assert torch.equal(default.out_scale, torch.ones(spec.numel)) and torch.equal(
        default.out_offset, torch.zeros(spec.numel)
    )


@pytest.mark.parametrize("init", ["hyperfan_in", "hyperfan_out", "mip", "default"])
def test_lowrank_head_rows_std(init: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Head rows of a factored block: std `(Var / (r E|h|⁴))^(1/4)`, with `Var` the hyperfan variance
    of the tensor (hyperfan_in's under MIP) and `E|h|⁴` over the code's documented 1024 draws
    (a generator seeded 0: N(0, 1), or U[0, 1] under MIP's encoding) pushed through the trunk
    written out here; biases zero. Whole blocks: `sqrt(Var / width)`, MIP `sqrt(2 / numel)`.
    `default` leaves PyTorch's own init (no normal draws)."""
    stds: list[float] = []
    modes: list[str] = []
    real, real_kaiming = nn.init.normal_, nn.init.kaiming_normal_

    def record(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        stds.append(std)
        return real(tensor, mean, std, generator)

    def record_kaiming(
        tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator: Any = None
    ) -> Tensor:
        modes.append(mode)
        return real_kaiming(tensor, a, mode, nonlinearity, generator)

    spec = _spec()
    parametrization = "mip" if init == "mip" else "standard"
    torch.manual_seed(0)
    monkeypatch.setattr(nn.init, "normal_", record)
    monkeypatch.setattr(nn.init, "kaiming_normal_", record_kaiming)
    hyper = hn.LowRankHyperNetwork(
        IN, spec, rank=2, hidden=(7, 5), activation="tanh", init=init, parametrization=parametrization
    )
    monkeypatch.undo()
    if init == "default":
        assert stds == [] and modes == []
        return
    assert modes == ["fan_out" if init == "mip" else "fan_in"] * 2  # the trunk, He-initialised
    gen = torch.Generator().manual_seed(0)
    cond = (torch.rand((1024, IN), generator=gen) if init == "mip" else torch.randn((1024, IN), generator=gen)).double()
    trunk = copy.deepcopy(hyper.trunk).double()
    with torch.no_grad():
        h = torch.stack([_reference_trunk_input(c, init) for c in cond])
        h = torch.stack([_trunk(trunk, x, "standard", dict(hidden=(7, 5))) for x in h])
    fourth = float(h.pow(2).sum(-1).pow(2).mean())

    def var(t: hn.spec.TensorInfo, fan: str) -> float:
        if t.role == "weight":
            return (0.5 if t.has_bias else 1.0) / (t.fan_in if fan == "hyperfan_in" else t.fan_out)
        return 0.0 if t.role in ("norm_weight", "norm_bias") else 0.5

    assert len(stds) == len(hyper.blocks)  # one draw per block, in block order
    for s, b in zip(stds, hyper.blocks, strict=True):
        if b.rank:
            expect = (var(b.info, "hyperfan_out" if init == "hyperfan_out" else "hyperfan_in") / (2 * fourth)) ** 0.25
            # the code's E|h|⁴ is a float32 mean of 1024 values: ~1e-6 relative, a fourth root of it less
            assert math.isclose(s, expect, rel_tol=1e-5), (b.info.name, s, expect)
            assert torch.equal(hyper.head.bias[b.offset : b.offset + b.size], torch.zeros(b.size))
        else:
            expect = math.sqrt(2.0 / b.info.numel) if init == "mip" else math.sqrt(var(b.info, init) / 5)
            assert math.isclose(s, expect, rel_tol=1e-12), (b.info.name, s, expect)


def _reference_trunk_input(z: Tensor, init: str) -> Tensor:
    """What the trunk sees for a condition `z: [IN]`: MIP's cos|sin encoding, else `z` itself."""
    if init == "mip":
        return torch.cat([torch.cos(math.pi / 2 * z), torch.sin(math.pi / 2 * z)])
    return z


def test_defaults_of_every_design() -> None:
    """The constructors' defaults, as their signatures state them."""
    spec = _spec()
    designs: list[tuple[hn.HyperNetwork, tuple[int, ...]]] = [
        (hn.MLPHyperNetwork(IN, spec), (128, 128)),
        (hn.ChunkedHyperNetwork(IN, spec), (128, 128)),
        (hn.LayerwiseHyperNetwork(IN, spec), (128,)),
        (hn.LowRankHyperNetwork(IN, spec), (128, 128)),
    ]
    for hyper, hidden in designs:
        assert (hyper.parametrization, hyper.init, hyper.hidden) == ("standard", "hyperfan_in", hidden)
        assert not hyper.encodes_input and hyper.features == IN
        assert [type(m) for m in hyper.trunk] == [nn.Linear, nn.ReLU] * len(hidden)  # no norm layer
    chunked, layerwise, lowrank = designs[1][0], designs[2][0], designs[3][0]
    assert isinstance(chunked, hn.ChunkedHyperNetwork) and isinstance(layerwise, hn.LayerwiseHyperNetwork)
    assert (chunked.chunk_size, chunked.chunk_dim, chunked.num_chunks) == (4096, 16, 1)
    assert chunked.chunk_embeddings.shape == (1, 16) and chunked.head.out_features == 4096
    assert layerwise.embedding_dim == 16 and layerwise.tensor_embeddings.shape == (len(spec), 16)
    assert isinstance(lowrank, hn.LowRankHyperNetwork) and lowrank.rank == 4


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda s: hn.ChunkedHyperNetwork(IN, s, chunk_size=0), "chunk_size and chunk_dim must be positive, got 0, 16"),
        (
            lambda s: hn.ChunkedHyperNetwork(IN, s, chunk_dim=0),
            "chunk_size and chunk_dim must be positive, got 4096, 0",
        ),
        (lambda s: hn.ChunkedHyperNetwork(IN, s, chunk_size=-1, chunk_dim=-1), "must be positive, got -1, -1"),
        (lambda s: hn.LayerwiseHyperNetwork(IN, s, embedding_dim=0), "embedding_dim must be positive, got 0"),
        (lambda s: hn.LowRankHyperNetwork(IN, s, rank=0), "rank must be a positive int, got 0"),
        (lambda s: hn.LowRankHyperNetwork(IN, s, rank=2.0), "rank must be a positive int, got 2.0"),
        (lambda s: hn.LowRankHyperNetwork(IN, s, rank=True), "rank must be a positive int, got True"),
    ],
)
def test_sizes_must_be_positive(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(_spec())


@pytest.mark.parametrize(
    "design", [hn.MLPHyperNetwork, hn.ChunkedHyperNetwork, hn.LayerwiseHyperNetwork, hn.LowRankHyperNetwork]
)
@pytest.mark.parametrize(
    ("hidden", "match"),
    [
        (64, r"hidden: expected a sequence of int widths such as \(64,\) or \(128, 128\), got 64"),
        ("64", r"hidden: expected a sequence of int widths .* got '64'"),
        ((64.5,), r"hidden: expected int widths, got \(64.5,\)"),
        ((8, True), r"hidden: expected int widths, got \(8, True\)"),
    ],
)
def test_hidden_must_be_int_widths(design: Any, hidden: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        design(IN, _spec(), hidden=hidden)


def test_hidden_accepts_any_integer_sequence() -> None:
    net = hn.MLPHyperNetwork(IN, _spec(), hidden=[np.int64(8), 4])
    assert net.hidden == (8, 4) and all(type(h) is int for h in net.hidden)


def test_sizes_of_one_are_valid() -> None:
    spec = _spec()
    chunked = hn.ChunkedHyperNetwork(IN, spec, chunk_size=1, chunk_dim=1, hidden=(4,))
    assert chunked.num_chunks == spec.numel and chunked(torch.rand(IN)).shape == (spec.numel,)
    layerwise = hn.LayerwiseHyperNetwork(IN, spec, embedding_dim=1, hidden=(4,))
    assert layerwise(torch.rand(IN)).shape == (spec.numel,)
    lowrank = hn.LowRankHyperNetwork(IN, spec, rank=1, hidden=(4,))
    assert [b.rank for b in lowrank.blocks] == [1, 0, 1, 0, 1, 0, 0]  # rank 1 also factors Linear(3, 4)
    assert lowrank(torch.rand(IN)).shape == (spec.numel,)


def test_output_layers_of_a_design_without_a_head() -> None:
    """A design of one's own with neither `head` nor `heads` has no output layers to zero."""

    class Direct(hn.HyperNetwork):
        def __init__(self, spec: hn.ParamSpec) -> None:
            super().__init__(IN, spec, residual=True)
            self.table = nn.Linear(IN, spec.numel)

        def delta(self, h: Tensor) -> Tensor:
            out: Tensor = self.table(h)
            return out

    hyper = Direct(_spec())
    assert hyper.output_layers() == []
    before = hyper.table.weight.detach().clone()
    hyper.zero_delta_()
    assert torch.equal(hyper.table.weight, before)


def _intended_var(t: hn.spec.TensorInfo, init: str) -> float:
    """hyperfan: Var(W) = 1/fan (halved with a bias), Var(b) = 1/2, norm tensors exactly 0."""
    if t.role == "weight":
        return (0.5 if t.has_bias else 1.0) / (t.fan_in if init == "hyperfan_in" else t.fan_out)
    return 0.0 if t.role in ("norm_weight", "norm_bias") else 0.5


@pytest.mark.parametrize(
    ("init", "residual"),
    [("hyperfan_in", False), ("hyperfan_out", True), ("mip", True), ("default", False)],
)
@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise"])
def test_initialisation_draws(design: str, init: str, residual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which draws each design makes at construction, read off `nn.init`: the trunk He-initialised
    (fan-in for hyperfan, fan-out for MIP, untouched for `default`), output rows per tensor with std
    `sqrt(Var / width)` (MIP: `sqrt(2 / numel)`), a shared chunked head N(0, 1/width); output biases
    exact: 1 for a normalisation scale unless residual (theta0 holds it then), else 0."""
    kaiming: list[tuple[str, str]] = []
    normal: list[float] = []
    real_kaiming, real_normal = nn.init.kaiming_normal_, nn.init.normal_

    def record_kaiming(
        tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", generator: Any = None
    ) -> Tensor:
        kaiming.append((mode, nonlinearity))
        return real_kaiming(tensor, a, mode, nonlinearity, generator)

    def record_normal(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        normal.append(std)
        return real_normal(tensor, mean, std, generator)

    spec = _spec()
    cls, extra = DESIGNS[design]
    parametrization = "mip" if init == "mip" else "standard"
    opts = dict(residual=residual) if parametrization == "standard" else {}
    monkeypatch.setattr(nn.init, "kaiming_normal_", record_kaiming)
    monkeypatch.setattr(nn.init, "normal_", record_normal)
    hyper = cls(IN, spec, hidden=(7, 5), init=init, parametrization=parametrization, **extra, **opts)
    monkeypatch.undo()
    if init == "default":
        assert kaiming == [] and normal == []
        return
    assert kaiming == [("fan_out" if init == "mip" else "fan_in", "relu")] * 2
    if design == "chunked":
        assert normal == [pytest.approx(1 / math.sqrt(5), rel=1e-12)]
        assert torch.equal(hyper.head.bias, torch.zeros(10))
        return
    expect = [math.sqrt(2.0 / t.numel) if init == "mip" else math.sqrt(_intended_var(t, init) / 5) for t in spec]
    assert normal == pytest.approx(expect, rel=1e-12)
    heads = hyper.heads if design == "layerwise" else [hyper.head]
    bias = torch.cat([h.bias for h in heads]).detach()
    for t in spec:
        value = 1.0 if t.role == "norm_weight" and not residual and init != "mip" else 0.0
        assert torch.equal(bias[t.offset : t.stop], torch.full((t.numel,), value)), t.name


@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise", "lowrank"])
def test_ntk_defaults_and_a_zero_weight_variance(design: str) -> None:
    cls, extra = DESIGNS[design]
    hyper = cls(IN, _spec(), hidden=(4,), parametrization="ntk", **extra)
    assert (hyper.weight_var, hyper.bias_var) == (2.0, 0.0)
    layers = [m for m in hyper.modules() if isinstance(m, NTKLinear)]
    assert len(layers) >= 2 and all((m.weight_var, m.bias_var) == (2.0, 0.0) for m in layers)
    for wv in (0.0, 0.5):  # any variance >= 0 is valid
        assert cls(IN, _spec(), hidden=(4,), parametrization="ntk", weight_var=wv, **extra).weight_var == wv
    for kwargs in (dict(weight_var=-1.0), dict(bias_var=-1.0)):
        with pytest.raises(ValueError, match="weight_var, bias_var: must be >= 0"):
            cls(IN, _spec(), hidden=(4,), parametrization="ntk", **extra, **kwargs)


@pytest.mark.parametrize("in_features", [0, -1, 1.5])
def test_in_features_must_be_a_positive_int(in_features: Any) -> None:
    with pytest.raises(ValueError, match=f"in_features: must be a positive int, got {in_features!r}"):
        hn.MLPHyperNetwork(in_features, _spec(), hidden=(4,))


def test_messages_of_options_that_do_nothing_are_whole() -> None:
    spec = _spec()
    cases = [
        (
            dict(parametrization="ntk", init="mip"),
            "init='mip' has no effect under parametrization='ntk' (its layers are N(0, 1) with the scaling in "
            "the forward); drop init= or use parametrization='standard'",
        ),
        (
            dict(encoding="z|1-z"),
            "encoding='z|1-z' has no effect under parametrization='standard': only 'mip' encodes its input; "
            "use parametrization='mip'",
        ),
        (
            dict(parametrization="mip", weight_var=1.0),
            "weight_var/bias_var have no effect under parametrization='mip'; they set the 'ntk' "
            "parametrization's variances",
        ),
        (
            dict(theta0=torch.zeros(spec.numel)),
            "theta0= has no effect without a residual output; use parametrization='mip' or residual=True",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            hn.MLPHyperNetwork(IN, spec, hidden=(4,), **kwargs)  # type: ignore[arg-type]
        assert str(info.value) == message
    with pytest.raises(TypeError) as err:
        hn.MLPHyperNetwork(IN, spec, hidden=(4,))(torch.tensor([[1, 0, 2]]))
    assert str(err.value) == (
        "cond: dtype torch.int64 is not floating point; task ids go through a conditioner "
        "(hn.TaskEmbedding or hn.TaskOneHot) in the HyperModel"
    )


def test_scalar_hyperparameter_conditions() -> None:
    """`in_features == 1`: a Python float (in the hypernetwork's own dtype), a 0-d tensor, `[B]` or
    any `[..., B]` without the trailing 1 all mean one value per condition."""
    torch.manual_seed(0)
    hyper = hn.MLPHyperNetwork(1, _spec(), hidden=(4,)).double()
    P = hyper.spec.numel
    ref = hyper(torch.tensor([0.25], dtype=torch.float64))
    torch.testing.assert_close(hyper(0.25), ref, **TOL)  # the float becomes float64 here
    torch.testing.assert_close(hyper(torch.tensor(0.25, dtype=torch.float64)), ref, **TOL)
    grid = torch.rand(2, 3, dtype=torch.float64)
    out = hyper(grid)
    assert out.shape == (2, 3, P)
    torch.testing.assert_close(out[1, 2], hyper(float(grid[1, 2])), **TOL)


def test_non_finite_conditions_are_refused_unless_validate_is_off() -> None:
    hyper = hn.MLPHyperNetwork(IN, _spec(), hidden=(4,))
    bad = torch.tensor([0.1, float("nan"), 0.2])
    with pytest.raises(ValueError, match="cond: contains NaN or inf"):
        hyper(bad)
    hyper.validate = False
    assert torch.isnan(hyper(bad)).all()


def test_residual_output_keeps_the_autocast_dtype() -> None:
    """Under autocast the head computes in bfloat16; theta0 is added in that dtype, so the generated
    weights come out in the autocast dtype (which the target accepts), equal to delta + theta0."""
    torch.manual_seed(0)
    hyper = hn.MLPHyperNetwork(IN, _spec(), hidden=(4,), residual=True)
    cond = torch.randn(2, IN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, delta = hyper(cond), hyper.delta(cond)
    assert out.dtype == delta.dtype == torch.bfloat16
    assert hyper.theta0 is not None
    torch.testing.assert_close(out, delta + hyper.theta0.bfloat16(), rtol=0, atol=0)


def test_lowrank_block_layout_edges() -> None:
    """A scalar parameter is generated whole; a matrix whose factors would need exactly as many
    numbers as the matrix (r (out + in) == out * in: 2 (4 + 4) == 16) is generated whole too."""
    spec = hn.ParamSpec({"s": (), "w": (4, 4)})
    hyper = hn.LowRankHyperNetwork(IN, spec, rank=2, hidden=(4,))
    assert [(b.rank, b.size) for b in hyper.blocks] == [(0, 1), (0, 16)]
    assert hyper.num_generated == 17 and hyper(torch.rand(IN)).shape == (17,)
    hyper = hn.LowRankHyperNetwork(IN, spec, rank=1, hidden=(4,))
    assert [(b.rank, b.size) for b in hyper.blocks] == [(0, 1), (1, 8)]


@pytest.mark.parametrize("encoding", ["default", "z|1-z"])
def test_mip_encoding_describes_its_widths(encoding: str) -> None:
    """The encoding a MIP hypernetwork owns states its widths, as a conditioner does."""
    hyper = hn.MLPHyperNetwork(IN, _spec(), hidden=(4,), parametrization="mip", encoding=encoding)
    assert hyper.encodes_input and hyper.features == 2 * IN
    assert (hyper.encoding.in_features, hyper.encoding.out_features) == (IN, 2 * IN)


@pytest.mark.parametrize("given", [None, torch.float32, torch.float64])
def test_theta0_takes_the_default_dtype_like_the_layers(given: torch.dtype | None) -> None:
    """theta0 (given in any float dtype, or the default one) is stored in the default dtype, as every
    layer built with it: under a float64 default the whole hypernetwork is float64 (it was always
    cast to float32, a mixed-precision model whose output was float64 + float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        target = hn.TargetNetwork(nn.Linear(3, 2))
        theta0 = None if given is None else target.initial_weights().to(given)
        hyper = hn.MLPHyperNetwork(4, target.spec, parametrization="mip", theta0=theta0)
        assert {p.dtype for p in hyper.parameters()} == {torch.float64}
        assert hyper(torch.rand(5, 4)).dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)
