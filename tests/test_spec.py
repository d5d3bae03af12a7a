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
