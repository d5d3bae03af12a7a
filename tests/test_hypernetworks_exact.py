"""Every hypernetwork design against a forward pass written out here from its raw parameters
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

import pytest
import torch
from torch import Tensor, nn

import hypernet as hn
from hypernet.layers import NTKLinear

TOL = dict(atol=1e-12, rtol=1e-12)
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
    real = nn.init.normal_

    def record(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        stds.append(std)
        return real(tensor, mean, std, generator)

    spec = _spec()
    parametrization = "mip" if init == "mip" else "standard"
    torch.manual_seed(0)
    monkeypatch.setattr(nn.init, "normal_", record)
    hyper = hn.LowRankHyperNetwork(
        IN, spec, rank=2, hidden=(7, 5), activation="tanh", init=init, parametrization=parametrization
    )
    monkeypatch.undo()
    if init == "default":
        assert stds == []
        return
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
        (lambda s: hn.LowRankHyperNetwork(IN, s, rank=0), "rank must be positive, got 0"),
    ],
)
def test_sizes_must_be_positive(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(_spec())


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
