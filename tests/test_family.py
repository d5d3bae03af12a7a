from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hypernet as hn

from models import INPUTS, SmallCNN, transformer

DESIGNS = {
    "mlp": lambda spec, p: hn.MLPHyperNetwork(3, spec, hidden=(32,), parametrization=p),
    "chunked": lambda spec, p: hn.ChunkedHyperNetwork(
        3, spec, chunk_size=50, chunk_dim=4, hidden=(32,), parametrization=p
    ),
    "layerwise": lambda spec, p: hn.LayerwiseHyperNetwork(3, spec, embedding_dim=4, hidden=(32,), parametrization=p),
    "lowrank": lambda spec, p: hn.LowRankHyperNetwork(3, spec, rank=2, hidden=(32,), parametrization=p),
}
PARAMS = ["standard", "ntk", "mip"]


def _regression_target() -> hn.TargetNetwork:
    return hn.TargetNetwork(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)))


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("design", list(DESIGNS))
def test_design_shapes_counts_and_training(design: str, parametrization: str) -> None:
    torch.manual_seed(0)
    target = _regression_target()
    hyper = DESIGNS[design](target.spec, parametrization)
    cond = torch.rand(8, 3)  # in [0, 1], valid for MIP
    theta = hyper(cond)
    assert theta.shape == (8, target.spec.numel)
    assert hyper.num_parameters() == sum(p.numel() for p in hyper.parameters())
    assert hyper.num_generated <= target.spec.numel
    # a small task: each condition defines a linear function of x; the loss must fall
    model = hn.HyperModel(target, hyper)
    x = torch.rand(8, 2) * 2 - 1
    y = (x * (cond[:, :2] - 0.5)).sum(1, keepdim=True) + cond[:, 2:] - 0.5
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = (model(x, cond) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_chunked_equals_loop_over_chunks_and_drops_padding() -> None:
    spec = hn.ParamSpec({"a": (7, 5), "b": (7,)})  # P = 42, chunks of 10: 5 chunks, 8 numbers of padding
    hyper = hn.ChunkedHyperNetwork(3, spec, chunk_size=10, chunk_dim=4, hidden=(16,))
    assert hyper.num_chunks == 5
    cond = torch.randn(6, 3)
    out = hyper(cond)
    pieces = []
    for c in range(hyper.num_chunks):  # independent: one chunk at a time
        inp = torch.cat([cond, hyper.chunk_embeddings[c].expand(6, -1)], dim=-1)
        pieces.append(hyper.head(hyper.trunk(inp)))
    flat = torch.cat(pieces, dim=-1)
    assert flat.shape[-1] == 50
    expect = hyper.out_offset + hyper.out_scale * flat[:, :42]
    torch.testing.assert_close(out, expect, atol=1e-6, rtol=1e-6)


def test_lowrank_weight_equals_base_plus_uv() -> None:
    target = hn.TargetNetwork(SmallCNN())
    hyper = hn.LowRankHyperNetwork(3, target.spec, rank=2, hidden=(16,), theta0=target.initial_weights())
    cond = torch.randn(4, 3)
    theta = target.spec.unflatten(hyper(cond))
    fw = hyper.factorized(cond)
    w0 = target.spec.unflatten(target.initial_weights())
    for name, (U, V) in fw.factors.items():
        shape = target.spec[name].shape
        assert U.shape == (4, shape[0], 2)
        direct = w0[name] + torch.einsum("bor,bir->boi", U, V).reshape(4, *shape)
        torch.testing.assert_close(theta[name], direct, atol=1e-6, rtol=1e-5)
    for name, value in fw.dense.items():
        torch.testing.assert_close(theta[name], value)
    matrices = [t for t in target.spec.tensors if len(t.shape) >= 2]
    expected_generated = sum(2 * (t.shape[0] + t.numel // t.shape[0]) for t in matrices) + sum(
        t.numel for t in target.spec.tensors if len(t.shape) < 2
    )
    assert hyper.num_generated == expected_generated


def _norm_over_scales(hyper: hn.HyperNetwork, direction: torch.Tensor) -> list[float]:
    with torch.no_grad():
        return [float(hyper(k * direction).norm()) for k in torch.linspace(0.05, 1.0, 12)]


def test_magnitude_proportionality_both_ways() -> None:
    torch.manual_seed(0)
    target = hn.TargetNetwork(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 10)))
    direction = torch.rand(200, 4) * 0.5 + 0.5  # inputs in [0, 1]; scaled by k in [0.05, 1]
    standard = hn.MLPHyperNetwork(4, target.spec, hidden=(64, 64), init="hyperfan_in")
    norms = torch.tensor(_norm_over_scales(standard, direction))
    ks = torch.linspace(0.05, 1.0, 12)
    # standard, zero biases, ReLU: positively homogeneous, the norm is exactly proportional to k
    torch.testing.assert_close(norms / ks, (norms / ks)[-1].expand(12), rtol=1e-4, atol=0)
    mip = hn.MLPHyperNetwork(4, target.spec, hidden=(64, 64), parametrization="mip", theta0=target.initial_weights())
    mip_norms = torch.tensor(_norm_over_scales(mip, direction))
    assert float(mip_norms.max() / mip_norms.min()) < 1.10, mip_norms


def test_mip_theta0_and_init() -> None:
    module = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    target = hn.TargetNetwork(module)
    hyper = hn.MLPHyperNetwork(2, target.spec, parametrization="mip")  # no theta0: PyTorch-like defaults
    assert hyper.theta0 is not None
    bn_w = hyper.theta0[target.spec.slice("1.weight")]
    assert torch.equal(bn_w, torch.ones(3))  # BatchNorm scale starts at 1, not 0
    hyper2 = hn.MLPHyperNetwork(2, target.spec, parametrization="mip", theta0=target.initial_weights())
    torch.testing.assert_close(hyper2.theta0.detach(), target.initial_weights())
    head = hyper2.head.weight
    for info in target.spec.tensors:  # each block ~ a layer of fan-out numel(tensor): std sqrt(2 / numel)
        if info.numel >= 20:
            std = float(head[info.offset : info.stop].detach().std())
            assert abs(std / math.sqrt(2 / info.numel) - 1) < 0.25


def test_input_encoding() -> None:
    z = torch.rand(5, 3)
    enc = hn.InputEncoding("cos|sin")(z)
    assert enc.shape == (5, 6)
    torch.testing.assert_close(enc.reshape(5, 2, 3).pow(2).sum(1), torch.ones(5, 3))  # constant norm per input
    torch.testing.assert_close(hn.InputEncoding("z|1-z")(z), torch.cat([z, 1 - z], -1))
    with pytest.raises(ValueError, match=r"inputs in \[0, 1\], got range \[-0.5, 0.2\]"):
        hn.InputEncoding()(torch.tensor([[-0.5, 0.2]]))
    assert hn.InputEncoding(check_range=False)(torch.tensor([[2.0]])).shape == (1, 2)
    with pytest.raises(ValueError, match="unknown mode 'fourier'"):
        hn.InputEncoding("fourier")


def test_bad_arguments() -> None:
    spec = hn.ParamSpec({"w": (3, 3)})
    with pytest.raises(ValueError, match="parametrization: unknown 'mup'"):
        hn.MLPHyperNetwork(2, spec, parametrization="mup")
    with pytest.raises(ValueError, match="init: unknown 'xavier'"):
        hn.ChunkedHyperNetwork(2, spec, init="xavier")
    with pytest.raises(ValueError, match="inputs in \\[0, 1\\]"):
        hn.LayerwiseHyperNetwork(2, spec, parametrization="mip")(torch.tensor([[1.5, 0.1]]))
    with pytest.raises(ValueError, match="generate: pattern 'nothing.*' matches no parameter"):
        hn.hypernetize(nn.Linear(2, 2), 1, generate="nothing.*")


@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise", "lowrank"])
def test_hypernetize_reproduces_original(kind: str, design: str) -> None:
    module = {
        "mlp": lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)),
        "cnn": SmallCNN,
        "transformer": transformer,
    }[kind]().eval()
    x = INPUTS[kind](4)
    expected = module(x)
    model = hn.hypernetize(module, cond_features=2, design=design, zero_init=True, hidden=(16,))
    cond = torch.rand(4, 2)
    torch.testing.assert_close(model(x, cond), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, cond[0]), expected, atol=1e-5, rtol=1e-5)
    # without zero_init the model starts near, not at, the original: delta is live
    live = hn.hypernetize(module, cond_features=2, design=design, hidden=(16,), zero_init=False)
    assert not torch.allclose(live(x, cond), expected, atol=1e-5)


def test_conditioners_with_hypermodel() -> None:
    target = _regression_target()
    x = torch.randn(5, 2)
    data = hn.HyperModel(target, hn.MLPHyperNetwork(4, target.spec, hidden=(8,)), hn.DataEncoder(nn.Linear(2, 4), 4))
    assert data(x).shape == (5, 1)
    assert data.weights(x=x).shape == (5, target.spec.numel)  # data-conditioned: per sample
    noise = hn.HyperModel(target, hn.MLPHyperNetwork(3, target.spec, hidden=(8,)), hn.NoiseConditioner(3))
    torch.manual_seed(1)
    a = noise(x)
    torch.manual_seed(1)
    torch.testing.assert_close(noise(x), a)  # deterministic under a seed
    assert not torch.allclose(noise(x), a)  # fresh noise otherwise
    fixed = torch.zeros(3)
    torch.testing.assert_close(noise(x, fixed), noise(x, fixed))
    enc = hn.HyperModel(target, hn.MLPHyperNetwork(2, target.spec, hidden=(8,)), hn.InputEncoding("z|1-z", 1))
    assert enc(x, torch.rand(5, 1)).shape == (5, 1)
