"""The `norm=` option of the hypernetwork trunk (BatchNorm / LayerNorm after each hidden layer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hypernet as hn
from hypernet.layers import FeatureBatchNorm, mlp_trunk


def _spec() -> hn.ParamSpec:
    return hn.TargetNetwork(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))).spec


def test_feature_batchnorm_normalises_over_all_leading_dims() -> None:
    x = torch.randn(4, 5, 6, dtype=torch.float64) * 3 + 1
    bn = FeatureBatchNorm(6).double().train()
    flat = x.reshape(-1, 6)
    # independent: per feature over the 20 rows, biased variance as BatchNorm uses in training
    ref = (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + bn.eps)
    torch.testing.assert_close(bn(x), ref.reshape(4, 5, 6))
    torch.testing.assert_close(bn(flat), ref)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_trunk_places_norm_between_linear_and_activation(norm: str) -> None:
    trunk = mlp_trunk(3, (7, 5), "tanh", "standard", norm=norm).double()
    kinds = [type(m).__name__ for m in trunk]
    expected = "FeatureBatchNorm" if norm == "batch" else "LayerNorm"
    assert kinds == ["Linear", expected, "Tanh", "Linear", expected, "Tanh"]
    x = torch.randn(9, 3, dtype=torch.float64)
    h = x
    for lin in (trunk[0], trunk[3]):  # by hand: linear, normalise (over the batch or the features), tanh
        assert isinstance(lin, nn.Linear)
        h = lin(h)
        dim = 0 if norm == "batch" else -1
        h = torch.tanh((h - h.mean(dim, keepdim=True)) / torch.sqrt(h.var(dim, unbiased=False, keepdim=True) + 1e-5))
    torch.testing.assert_close(trunk(x), h)


@pytest.mark.parametrize(
    "cls", [hn.MLPHyperNetwork, hn.ChunkedHyperNetwork, hn.LayerwiseHyperNetwork, hn.LowRankHyperNetwork]
)
@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_every_design_takes_norm(cls: type, norm: str | None) -> None:
    spec = _spec()
    kwargs = {"chunk_size": 16} if cls is hn.ChunkedHyperNetwork else {}
    hyper = cls(2, spec, hidden=(16,), parametrization="mip", norm=norm, **kwargs)
    layers = {type(m).__name__ for m in hyper.trunk}
    assert ("FeatureBatchNorm" in layers) == (norm == "batch")
    assert ("LayerNorm" in layers) == (norm == "layer")
    out = hyper(torch.rand(4, 2))
    assert out.shape == (4, spec.numel) and torch.isfinite(out).all()


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="norm"):
        hn.MLPHyperNetwork(2, _spec(), norm="group")
