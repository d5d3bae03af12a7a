"""The initialisation rules of `hypernet.init`, exactly: each function's draws are replayed here from
the same seed with the standard deviation computed from the formula in this file (never from
`hypernet.init`). test_init_variance.py checks the same rules statistically through whole designs.

Formulas (see the `hypernet.init` docstring): hyperfan `Var(W) = 1/fan` (halved when the layer has a
generated bias), `Var(b) = 1/2`, norm tensors 0 (their scale is the bias 1, their shift 0); an output
row block of input width `d` and input second moment `m` gets `std = sqrt(Var / (d m))`. MIP: a block
is a layer of fan-out `numel` (`std = sqrt(2 / numel)`, zero bias); hidden layers Kaiming fan-out
(MIP) or fan-in (hyperfan), ReLU gain, zero bias; `default` changes nothing.

Tolerance: the replayed draws use the same generator and the same kernels (`normal_`, `uniform_`),
so they agree to float32 rounding of the scale (rtol 1e-6); any other standard deviation (fan-in vs
fan-out differ by >= 1.5x below) or another draw order is far outside that.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import hypernet as hn
from hypernet import init as hinit

TIGHT: dict[str, Any] = {"rtol": 1e-6, "atol": 0.0}


def _spec() -> hn.ParamSpec:
    # w: fan_in 12, fan_out 18, numel 72, has a bias; v: fan_in 2, fan_out 5, numel 10, no bias
    return hn.ParamSpec(
        {"w": (6, 4, 3), "b": (6,), "v": (5, 2), "g": (5,), "s": (5,)},
        fans={"b": (12, 18)},
        roles={"g": "norm_weight", "s": "norm_bias"},
        has_bias={"w": True},
    )


def _var(info: hn.spec.TensorInfo, fan: str) -> float:
    """The intended variance, from the formula."""
    if info.role == "weight":
        return (0.5 if info.has_bias else 1.0) / (info.fan_in if fan == "in" else info.fan_out)
    return 0.0 if info.role.startswith("norm") else 0.5


def _normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
    return torch.empty(shape).normal_(0.0, std)


def test_check_init() -> None:
    assert [hinit.check_init(i) for i in hinit.INITS] == ["default", "hyperfan_in", "hyperfan_out", "mip"]
    with pytest.raises(ValueError, match="unknown 'fan_in'"):
        hinit.check_init("fan_in")


@pytest.mark.parametrize("fan", ["in", "out"])
def test_intended_variance(fan: str) -> None:
    spec = _spec()
    got = [hinit.intended_variance(t, f"hyperfan_{fan}") for t in spec]
    expect = {"in": [0.5 / 12, 0.5, 1 / 2, 0.0, 0.0], "out": [0.5 / 18, 0.5, 1 / 5, 0.0, 0.0]}[fan]
    assert got == pytest.approx(expect, rel=1e-15)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Sequential(nn.Linear(7, 5)))


@pytest.mark.parametrize(("init", "fans"), [("hyperfan_in", (3, 7)), ("hyperfan_out", (3, 7)), ("mip", (7, 5))])
def test_init_hidden_is_he_normal(init: str, fans: tuple[int, int]) -> None:
    layers = _mlp()
    torch.manual_seed(1)
    hinit.init_hidden(layers, init)
    torch.manual_seed(1)
    # He with ReLU gain: std = sqrt(2 / fan), fan-in (3, then 7) for hyperfan, fan-out (7, then 5) for MIP
    first = _normal((7, 3), math.sqrt(2.0 / fans[0]))
    second = _normal((5, 7), math.sqrt(2.0 / fans[1]))
    inner = layers[2]
    assert isinstance(layers[0], nn.Linear) and isinstance(inner, nn.Sequential) and isinstance(inner[0], nn.Linear)
    torch.testing.assert_close(layers[0].weight, first, **TIGHT)
    torch.testing.assert_close(inner[0].weight, second, **TIGHT)
    assert not layers[0].bias.any() and not inner[0].bias.any()


def test_default_leaves_everything_alone() -> None:
    layers = _mlp()
    before = [p.clone() for p in layers.parameters()]
    hinit.init_hidden(layers, "default")
    head = nn.Linear(4, _spec().numel)
    head_before = [p.clone() for p in head.parameters()]
    hinit.init_output_layer(head, _spec(), "default")
    hinit.init_shared_head(head, "default")
    for a, b in zip([*before, *head_before], [*layers.parameters(), *head.parameters()]):
        assert torch.equal(a, b)
    scale, offset = hinit.element_scales(_spec(), "default", width=4, residual=False)
    assert torch.equal(scale, torch.ones(98)) and torch.equal(offset, torch.zeros(98))


@pytest.mark.parametrize("init", ["hyperfan_in", "hyperfan_out", "mip"])
@pytest.mark.parametrize("residual", [False, True])
def test_output_layer_rows_block_by_block(init: str, residual: bool) -> None:
    spec, d = _spec(), 4
    head = nn.Linear(d, spec.numel)
    nn.init.constant_(head.bias, 3.0)  # every block must overwrite it
    torch.manual_seed(2)
    if residual:
        hinit.init_output_layer(head, spec, init, residual=True)
    else:
        hinit.init_output_layer(head, spec, init)  # not residual by default
    torch.manual_seed(2)
    for t in spec:
        if init == "mip":
            std, bias = math.sqrt(2.0 / t.numel), 0.0
        else:
            std = math.sqrt(_var(t, init.removeprefix("hyperfan_")) / d)
            bias = 1.0 if t.role == "norm_weight" and not residual else 0.0
        rows = slice(t.offset, t.offset + t.numel)
        torch.testing.assert_close(head.weight[rows], _normal((t.numel, d), std), **TIGHT)
        assert torch.all(head.bias[rows] == bias), t.name


def test_output_rows_divide_by_the_input_second_moment() -> None:
    t = _spec()["v"]
    weight, bias = torch.empty(10, 6), torch.full((10,), 3.0)
    torch.manual_seed(3)
    hinit.init_output_rows(weight, bias, t, "hyperfan_out", input_second_moment=4.0)
    torch.manual_seed(3)
    torch.testing.assert_close(weight, _normal((10, 6), math.sqrt((1 / 5) / (6 * 4.0))), **TIGHT)
    assert not bias.any()
    hinit.init_output_rows(weight, None, t, "mip")  # a bias-free head is allowed under every init
    hinit.init_output_rows(weight, None, t, "hyperfan_in")


def test_default_theta0_is_pytorch_layer_init() -> None:
    spec = _spec()
    torch.manual_seed(4)
    theta = hinit.default_theta0(spec)
    torch.manual_seed(4)
    # nn.Linear / nn.Conv's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias with its weight's fan-in
    w = torch.empty(72).uniform_(-1 / math.sqrt(12), 1 / math.sqrt(12))
    b = torch.empty(6).uniform_(-1 / math.sqrt(12), 1 / math.sqrt(12))
    v = torch.empty(10).uniform_(-1 / math.sqrt(2), 1 / math.sqrt(2))
    expect = torch.cat([w, b, v, torch.ones(5), torch.zeros(5)])
    torch.testing.assert_close(theta, expect, **TIGHT)


@pytest.mark.parametrize("init", ["hyperfan_in", "hyperfan_out", "mip"])
@pytest.mark.parametrize("residual", [False, True])
def test_element_scales(init: str, residual: bool) -> None:
    spec, width = _spec(), 32
    scale, offset = hinit.element_scales(spec, init, width=width, residual=residual)
    for t in spec:
        rows = slice(t.offset, t.offset + t.numel)
        # the shared head's rows have variance 1/width and unit-moment inputs: scale = target std
        std = math.sqrt(2.0 * width / t.numel) if init == "mip" else math.sqrt(_var(t, init.removeprefix("hyperfan_")))
        assert torch.allclose(scale[rows], torch.full((t.numel,), std), rtol=1e-6, atol=0), t.name
        assert torch.all(offset[rows] == (1.0 if t.role == "norm_weight" and not residual else 0.0)), t.name


def test_shared_head() -> None:
    head = nn.Linear(9, 20)
    torch.manual_seed(5)
    hinit.init_shared_head(head, "mip")
    torch.manual_seed(5)
    torch.testing.assert_close(head.weight, _normal((20, 9), 1 / 3), **TIGHT)
    assert not head.bias.any()
    other = nn.Conv1d(2, 3, 1)
    before = other.weight.clone()
    hinit.init_shared_head(other, "hyperfan_in")  # only a Linear head is re-initialised
    assert torch.equal(other.weight, before)
