from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hypernet as hn


def test_layout_and_roles() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 5), nn.BatchNorm2d(8), nn.Linear(8, 2, bias=False))
    spec = hn.ParamSpec.from_module(m)
    assert spec.names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight"]
    assert spec.shapes == [(8, 3, 5, 5), (8,), (8,), (8,), (2, 8)]
    assert spec.offsets == [0, 600, 608, 616, 624]
    assert spec.numel == 640 == sum(p.numel() for p in m.parameters())
    assert spec["0.weight"].fan_in == 75 and spec["0.weight"].fan_out == 200
    assert spec["0.bias"].role == "bias" and spec["0.bias"].fan_in == 75  # fan of its layer's weight
    assert spec["0.weight"].has_bias and not spec["2.weight"].has_bias
    assert spec["1.weight"].role == "norm_weight" and spec["1.bias"].role == "norm_bias"


@settings(deadline=None, max_examples=25)
@given(
    shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=4),
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
)
def test_flatten_unflatten_roundtrip(shapes: list[list[int]], lead: list[int]) -> None:
    spec = hn.ParamSpec({f"t{i}": s for i, s in enumerate(shapes)})
    flat = torch.randn(*lead, spec.numel)
    parts = spec.unflatten(flat)
    for info in spec.tensors:
        assert parts[info.name].shape == (*lead, *info.shape)
        # independent check: the slice at the recorded offset, reshaped
        expect = flat[..., info.offset : info.offset + info.numel].reshape((*lead, *info.shape))
        assert torch.equal(parts[info.name], expect)
    assert torch.equal(spec.flatten(parts), flat)


def test_flatten_errors_name_the_tensor() -> None:
    spec = hn.ParamSpec({"a": (2, 3), "b": (3,)})
    with pytest.raises(ValueError, match="missing tensors \\['b'\\]"):
        spec.flatten({"a": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="'a' must end in shape \\[2, 3\\]"):
        spec.flatten({"a": torch.zeros(3, 2), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match="leading dims"):
        spec.flatten({"a": torch.zeros(4, 2, 3), "b": torch.zeros(5, 3)})
    with pytest.raises(ValueError, match="expected shape \\[..., 9\\], got \\[8\\]"):
        spec.unflatten(torch.zeros(8))


@pytest.mark.parametrize("shape", [(7, 3), (7, 3, 5), (7, 3, 5, 2), (7, 3, 2, 5, 4)])
def test_tensor_fans_match_pytorch(shape: tuple[int, ...]) -> None:
    # independent reference: PyTorch's own fan computation (what its initialisers use)
    expect = nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert hn.spec.tensor_fans(shape) == expect


def test_tensor_fans_of_scalars_and_vectors() -> None:
    # PyTorch refuses these; the spec gives a scalar fan 1 and a vector its own length both ways
    assert hn.spec.tensor_fans(()) == (1, 1)
    assert hn.spec.tensor_fans((6,)) == (6, 6)


def test_default_roles_fans_and_bias_flags() -> None:
    spec = hn.ParamSpec({"w": (4, 3), "c": (4, 3, 2), "b": (4,), "s": ()})
    assert [t.role for t in spec] == ["weight", "weight", "bias", "bias"]
    assert (spec["w"].fan_in, spec["w"].fan_out) == (3, 4)
    assert (spec["c"].fan_in, spec["c"].fan_out) == (6, 8)
    assert not any(t.has_bias for t in spec)  # nothing says a bias belongs to a weight
    flagged = hn.ParamSpec({"w": (4, 3), "b": (4,)}, has_bias={"w": True}, roles={"b": "other"}, fans={"b": (9, 2)})
    assert flagged["w"].has_bias and not flagged["b"].has_bias
    assert flagged["b"].role == "other" and (flagged["b"].fan_in, flagged["b"].fan_out) == (9, 2)


def test_bad_specs_name_the_offender() -> None:
    with pytest.raises(ValueError, match="`shapes` is empty"):
        hn.ParamSpec({})
    with pytest.raises(ValueError, match="tensor 'w' has shape \\(3, 0\\)"):
        hn.ParamSpec({"w": (3, 0)})
    with pytest.raises(ValueError, match="role 'gain' of 'w'"):
        hn.ParamSpec({"w": (3, 2)}, roles={"w": "gain"})
    spec = hn.ParamSpec({"a": (2, 3), "b": (3,)})
    with pytest.raises(KeyError, match="no tensor 'c'; it has \\['a', 'b'\\]"):
        spec["c"]
    with pytest.raises(ValueError, match="unexpected tensors \\['c'\\]"):
        spec.flatten({"a": torch.zeros(2, 3), "b": torch.zeros(3), "c": torch.zeros(1)})
    with pytest.raises(TypeError, match="got ndarray"):
        spec.unflatten(torch.zeros(9).numpy())  # type: ignore[arg-type]


def test_container_protocol_equality_and_repr() -> None:
    spec = hn.ParamSpec({"a": (2, 3), "b": (3,)})
    assert "a" in spec and "c" not in spec and len(spec) == 2
    assert [t.name for t in spec] == ["a", "b"]
    assert spec.slice("a") == slice(0, 6) and spec.slice("b") == slice(6, 9)
    same, other = hn.ParamSpec({"a": (2, 3), "b": (3,)}), hn.ParamSpec({"a": (3, 2), "b": (3,)})
    assert spec == same and hash(spec) == hash(same) and len({spec, same, other}) == 2
    assert spec != other and spec != "a"
    assert repr(spec) == "ParamSpec(numel=9, {a: [2, 3], b: [3]})"


class _Named(nn.Module):
    """Parameters with chosen names, to pin the weight <-> bias naming rule."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))


def test_from_module_bare_and_nested_names() -> None:
    # a bare layer: names have no prefix
    spec = hn.ParamSpec.from_module(nn.Linear(3, 5))
    assert spec.names == ["weight", "bias"]
    assert spec["weight"].has_bias and (spec["weight"].fan_in, spec["weight"].fan_out) == (3, 5)
    assert spec["bias"].role == "bias" and (spec["bias"].fan_in, spec["bias"].fan_out) == (3, 5)
    # two levels of nesting: the prefix is everything up to the last dot
    m = nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5)), nn.Linear(5, 2, bias=False))
    spec = hn.ParamSpec.from_module(m)
    assert spec["0.0.weight"].has_bias and spec["0.0.bias"].role == "bias"
    assert (spec["0.0.bias"].fan_in, spec["0.0.bias"].fan_out) == (3, 5)
    assert spec["0.1.weight"].role == "norm_weight" and spec["0.1.bias"].role == "norm_bias"
    assert all((spec[n].fan_in, spec[n].fan_out) == (1, 1) for n in ("0.1.weight", "0.1.bias"))
    assert (spec["1.weight"].role, spec["1.weight"].fan_in, spec["1.weight"].fan_out) == ("weight", 5, 2)


def test_from_module_subset_keeps_module_order() -> None:
    m = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    spec = hn.ParamSpec.from_module(m, names=["1.weight", "0.bias"])
    assert spec.names == ["0.bias", "1.weight"]
    assert not spec["1.weight"].has_bias  # its bias is not generated
    assert (spec["0.bias"].fan_in, spec["0.bias"].fan_out) == (3, 5)  # still its own weight's fans


def test_from_module_lone_vectors() -> None:
    # a bias with no weight beside it and a vector that is neither: fans (1, 1)
    spec = hn.ParamSpec.from_module(_Named(bias=(3,), scale=(4,)))
    assert (spec["bias"].role, spec["bias"].fan_in, spec["bias"].fan_out) == ("bias", 1, 1)
    assert (spec["scale"].role, spec["scale"].fan_in, spec["scale"].fan_out) == ("other", 1, 1)


def test_from_module_renames_only_the_first_weight_or_bias() -> None:
    # `bias_ih_l0` <-> `weight_ih_l0`: only the first occurrence of the word is swapped
    spec = hn.ParamSpec.from_module(_Named(weight_weight=(3, 2), bias_weight=(3,)))
    assert spec["weight_weight"].has_bias
    assert (spec["bias_weight"].fan_in, spec["bias_weight"].fan_out) == (2, 3)
    spec = hn.ParamSpec.from_module(_Named(weight_bias=(4, 5), bias_bias=(4,)))
    assert (spec["bias_bias"].role, spec["bias_bias"].fan_in, spec["bias_bias"].fan_out) == ("bias", 5, 4)
