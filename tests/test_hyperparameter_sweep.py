"""`hypernet.methods.conditional` against hand computations, and the `hyperparameter-sweep --quick` run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hypernet.cli import main
from hypernet.experiments.hyperparameter_sweep import gaps, picks
from hypernet.methods.conditional import (
    ConditionalModel,
    HyperparameterRange,
    LossMixing,
    WeightDecay,
    conditional_loss,
    loss_curve,
    plain_loss,
    weight_norms,
)

WD = HyperparameterRange("weight_decay", 1e-4, 1e-1)


def _model(hidden: tuple[int, ...] = (), seed: int = 0) -> ConditionalModel:
    torch.manual_seed(seed)
    model = ConditionalModel(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)), WD, hidden=hidden)
    with torch.no_grad():  # move the generated weights away from theta0, so that they depend on the value
        for p in model.hyper.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_range_scales_by_hand() -> None:
    assert float(WD.to_unit(1e-4)) == pytest.approx(0.0, abs=1e-12)
    assert float(WD.to_unit(1e-1)) == pytest.approx(1.0, abs=1e-12)
    assert float(WD.to_unit(10**-2.5)) == pytest.approx(0.5, abs=1e-12)
    # half-decade steps: 1e-4, 10^-3.5, ..., 1e-1
    assert WD.grid(7).tolist() == pytest.approx([10 ** (-4 + k / 2) for k in range(7)], rel=1e-12)
    lin = HyperparameterRange("dropout", 0.0, 0.8, log=False)
    assert lin.grid(5).tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-12)
    assert float(lin.to_unit(0.3)) == pytest.approx(0.375, abs=1e-12)
    v = torch.tensor([1e-4, 3e-3, 0.05], dtype=torch.float64)
    assert WD.from_unit(WD.to_unit(v)).tolist() == pytest.approx(v.tolist(), rel=1e-12)


def test_loss_functions_refuse_bad_values_and_batches() -> None:
    model, x, y = _model(), torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="batches: expected at least one"):
        conditional_loss(model, WeightDecay(), [], torch.zeros(0))
    with pytest.raises(ValueError, match=r"values: expected shape \[1\] \(one per batch\), got \[2\]"):
        conditional_loss(model, WeightDecay(), [(x, y)], torch.tensor([1e-3, 1e-2]))
    with pytest.raises(ValueError, match=r"values: expected \[K\] .* got shape \[2, 1\]"):
        loss_curve(model, torch.tensor([[1e-3], [1e-2]]), x, y)


def test_range_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="weight_decay: values must lie in"):
        WD.to_unit(0.5)
    with pytest.raises(ValueError, match="low < high"):
        HyperparameterRange("x", 1.0, 0.1)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        HyperparameterRange("x", 0.0, 1.0)
    with pytest.raises(ValueError, match="n must be >= 2"):
        WD.grid(1)
    with pytest.raises(TypeError, match="hyperparameter"):
        ConditionalModel(nn.Linear(2, 2), (1e-4, 1e-1))  # type: ignore[arg-type]


def test_sample_is_uniform_in_the_unit_scale() -> None:
    n = 20_000
    draws = WD.sample(n, torch.Generator().manual_seed(3))
    assert bool(((draws >= 1e-4) & (draws <= 1e-1)).all())
    # log-uniform: half the draws below 10^-2.5, a quarter below 10^-3.25; 4 binomial sd (0.0035, 0.0031)
    assert float((draws < 10**-2.5).double().mean()) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / n))
    assert float((draws < 10**-3.25).double().mean()) == pytest.approx(0.25, abs=4 * math.sqrt(0.1875 / n))
    assert torch.equal(draws, WD.sample(n, torch.Generator().manual_seed(3)))


def test_generated_weights_are_mip_of_the_value_by_hand() -> None:
    """With no hidden layer: theta(v) = theta0 + b + W [cos(pi z / 2), sin(pi z / 2)], z = log-scale position."""
    model = _model(hidden=())
    head, theta0 = model.hyper.head, model.hyper.theta0
    assert isinstance(head, nn.Linear) and theta0 is not None
    for value in (1e-4, 10**-2.5, 2e-2, 1e-1):
        z = (math.log10(value) + 4) / 3
        enc = torch.tensor([math.cos(math.pi * z / 2), math.sin(math.pi * z / 2)])
        want = theta0.detach() + head.bias.detach() + head.weight.detach() @ enc
        # float32 rounding of a 2-term sum: 1e-6 relative
        torch.testing.assert_close(model.weights(value).detach(), want, rtol=1e-6, atol=1e-6)
    # a batch of values gives one weight set each, equal to the one-by-one results
    values = torch.tensor([1e-4, 3e-3], dtype=torch.float64)
    batch = model.weights(values)
    assert batch.shape == (2, model.target.spec.numel)
    torch.testing.assert_close(batch[1], model.weights(3e-3), rtol=0, atol=0)


def test_conditional_loss_is_the_objective_of_each_materialized_network() -> None:
    """Against plain modules with the generated weights baked in, and the penalty summed over their parameters."""
    model = _model(hidden=(6,))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(7, 5, generator=g), torch.randint(3, (7,), generator=g)) for _ in range(3)]
    values = torch.tensor([1e-4, 2e-3, 0.08], dtype=torch.float64)
    got = conditional_loss(model, WeightDecay(), batches, values)
    want = 0.0
    for (x, y), v in zip(batches, values.tolist()):
        net = model.materialize(v)
        with torch.no_grad():
            penalty = sum(float(p.double().pow(2).sum()) for p in net.parameters())
            want += float(F.cross_entropy(net(x), y)) + 0.5 * v * penalty
    # float32 forward passes summed in another order: 1e-5 relative
    assert float(got.detach()) == pytest.approx(want / 3, rel=1e-5)
    with pytest.raises(ValueError, match=r"values: expected shape \[3\]"):
        conditional_loss(model, WeightDecay(), batches, values[:2])


def test_both_arms_share_the_objective_at_theta0() -> None:
    """A conditioned model whose delta is zero generates the target's initial weights, so its loss at
    any value is the plain module's `plain_loss`, computed there from `module.parameters()`."""
    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model = ConditionalModel(module, WD, hidden=(3,))
    model.hyper.zero_delta_()
    x, y = torch.randn(9, 5), torch.randint(3, (9,))
    for v in (1e-4, 0.03):
        by_hand = F.cross_entropy(module(x), y) + 0.5 * v * sum(p.pow(2).sum() for p in module.parameters())
        assert float(plain_loss(module, WeightDecay(), x, y, v).detach()) == pytest.approx(
            float(by_hand.detach()), rel=1e-6
        )
        got = conditional_loss(model, WeightDecay(), [(x, y)], torch.tensor([v], dtype=torch.float64))
        assert float(got.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)


def test_loss_mixing_by_hand() -> None:
    logits, y = torch.randn(6, 4), torch.randint(4, (6,))
    uniform = lambda out, _y: -F.log_softmax(out, -1).mean()  # noqa: E731
    mix = LossMixing(F.cross_entropy, uniform)
    want = 0.7 * float(F.cross_entropy(logits, y)) + 0.3 * float(uniform(logits, y))
    assert float(mix(logits, y, torch.zeros(3), 0.3)) == pytest.approx(want, rel=1e-6)


def test_loss_curve_and_norms_match_a_loop() -> None:
    model = _model(hidden=(6,))
    x, y = torch.randn(11, 5), torch.randint(3, (11,))
    values = WD.grid(4)
    curve, norms = loss_curve(model, values, x, y), weight_norms(model, values)
    for i, v in enumerate(values.tolist()):
        with torch.no_grad():
            assert float(curve[i]) == pytest.approx(float(F.cross_entropy(model.materialize(v)(x), y)), rel=1e-6)
        # a batch of values and one value go through float32 matmuls of other shapes: 1e-6 relative
        assert float(norms[i]) == pytest.approx(float(model.weights(v).detach().double().norm()), rel=1e-6)
    assert len(set(curve.tolist())) == 4  # the value reaches the weights


def test_picks_and_gaps_by_hand() -> None:
    hp = HyperparameterRange("wd", 1e-4, 1.0)  # 5 grid values, one per decade
    grid, fine = hp.grid(5), hp.grid(9)  # the fine grid: half-decade steps
    separate = [3.0, 2.0, 1.0, 2.0, 4.0]
    conditioned = [5.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.3, 2.0]  # minimum at fine index 6: 10^-1
    p = picks(hp, grid, separate, fine, conditioned)
    assert p["separate_best"] == pytest.approx(1e-2) and p["separate_best_index"] == 2
    assert p["conditioned_best"] == pytest.approx(1e-1) and p["conditioned_min_loss"] == 1.1
    assert p["distance_grid_steps"] == pytest.approx(1.0)  # one decade = one grid step
    assert p["regret"] == pytest.approx(1.0)  # the separate run at 10^-1 has loss 2.0, its best 1.0
    assert p["separate_variation"] == pytest.approx(3.0)  # (4 - 1) / 1
    g = gaps(separate, [3.5, 2.0, 0.5, 2.5, 4.0])
    assert g == pytest.approx({"mean_abs_gap": 0.3, "max_abs_gap": 0.5, "mean_gap": 0.1})


def test_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "hyperparameter-sweep", "--quick", "--set", "wd_low=1", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "wd_low < wd_high" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_quick_run_follows_the_true_curve_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "hyperparameter-sweep", "--quick", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    s = results["summary"]
    (r,) = s["per_seed"]
    sep, cond = r["separate"]["val_loss"], r["conditioned"]["val_loss_grid"]
    # Direction: wherever the separate runs' validation loss changes by more than 0.05 nats between
    # neighbouring grid values (on digits it rises from 0.25 to 1.4 over the range), the conditioned
    # model's loss changes the same way, by at least a fifth as much (a model that ignored the value
    # would be flat and fail; in the quick run it moves 0.06-0.23 nats where the runs move 0.07-0.84).
    steps = [(b - a, d - c) for a, b, c, d in zip(sep, sep[1:], cond, cond[1:]) if abs(b - a) > 0.05]
    assert len(steps) >= 2, sep
    for true, ours in steps:
        assert ours * true > 0 and abs(ours) >= 0.2 * abs(true), (sep, cond)
    # the weights shrink with weight decay in both arms
    for norms in (r["separate"]["weight_norm"], r["conditioned"]["weight_norm_grid"]):
        assert all(b < a for a, b in zip(norms, norms[1:])), norms
    assert s["cost"]["separate"]["steps"] == 7 * 600 and s["cost"]["conditioned"]["steps"] == 600
    assert (out / "figures" / "hyperparameter-sweep.png").is_file()
    # resuming the finished run trains nothing and gives the same numbers (timings kept in train_seconds.json)
    assert main(["run", "hyperparameter-sweep", "--quick", "--out", str(out), "--resume", "--no-progress"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["per_seed"] == s["per_seed"]


def test_one_value_per_sample_matches_a_loop() -> None:
    """`model(x, values[B])` (per-sample generated weights, batched) against one call per sample."""
    model = _model(hidden=(6,))
    x = torch.randn(5, 5)
    values = WD.sample(5, torch.Generator().manual_seed(2))
    batched = model(x, values)
    looped = torch.cat([model(x[i : i + 1], float(values[i])) for i in range(5)])
    # the batched per-sample path sums in another order than F.linear: float32 rounding, 1e-5
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
