from __future__ import annotations

import pytest
import torch
from torch import nn

import hypernet as hn


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
