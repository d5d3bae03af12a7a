"""Initialisation of every hypernetwork design: the generated weights' variance per tensor against
the intended value, computed here from the formulas (never from `hypernet.init`), issue #11 item 1.

Intended (see the `hypernet.init` docstring; Chang, Sacramento & Weiss 2020; Ortiz et al. 2024):
* hyperfan_in / hyperfan_out: `Var(W) = 1/fan_in` (resp. `1/fan_out`), halved when the layer also
  has a generated bias; `Var(b) = 1/2`; normalisation scales exactly 1 and shifts exactly 0.
  The hypernetwork's input has unit second moment per coordinate (N(0, 1) conditions here).
* mip: every output block is a layer of fan-out `numel(t)` (`std = sqrt(2 / numel)`) after Kaiming
  fan-out ReLU hidden layers. A fan-out He layer keeps the *sum* of squares of its input in
  expectation (`E Σ_k h_k² = Σ_j x_j²`), so `Var(Δ_t) = 2 S / numel(t)` with `S` the trunk input's
  sum of squares: `in_features` for the cos|sin encoding (cos² + sin² = 1 per feature), plus the
  embedding size for designs that append an N(0, 1) chunk/tensor embedding.
* default: PyTorch's own init, the same for every generated tensor (no per-tensor scaling).

The target's tensors have fan-in, fan-out and numel all different, so fan-in-, fan-out- and
numel-based formulas differ by 2x or more; each test asserts its bound is under half that gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import hypernet as hn

IN, EMB, WIDTH, CONDS, SEEDS = 16, 8, 256, 64, 100


def _spec() -> hn.ParamSpec:
    # fan_in / fan_out / numel: 0.weight 20/48/960 (has a bias), 1.weight 36/60/360 (has a bias),
    # 2.weight 48/8/384 (no bias); then vectors and a LayerNorm's scale and shift
    module = nn.ModuleList([nn.Linear(20, 48), nn.Conv2d(6, 10, (3, 2)), nn.Linear(48, 8, bias=False), nn.LayerNorm(8)])
    return hn.TargetNetwork(module).spec


DESIGNS: dict[str, Callable[..., hn.HyperNetwork]] = {
    "mlp": lambda s, **k: hn.MLPHyperNetwork(IN, s, hidden=(WIDTH, WIDTH), **k),
    "chunked": lambda s, **k: hn.ChunkedHyperNetwork(IN, s, chunk_size=256, chunk_dim=EMB, hidden=(WIDTH, WIDTH), **k),
    "layerwise": lambda s, **k: hn.LayerwiseHyperNetwork(IN, s, embedding_dim=EMB, hidden=(WIDTH,), **k),
    "lowrank": lambda s, **k: hn.LowRankHyperNetwork(IN, s, rank=4, hidden=(WIDTH, WIDTH), **k),
}
EXTRA_INPUT = {"mlp": 0, "chunked": EMB, "layerwise": EMB, "lowrank": 0}


def _second_moments(design: str, parametrization: str, init: str) -> tuple[np.ndarray, hn.ParamSpec]:
    """Per seed and tensor, the mean square of the generated weights (of `θ - θ0` for residual
    designs) over `CONDS` conditions: `[SEEDS, tensors]`."""
    spec = _spec()
    out = []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        hyper = DESIGNS[design](spec, parametrization=parametrization, init=init)
        cond = torch.rand(CONDS, IN) if parametrization == "mip" else torch.randn(CONDS, IN)
        with torch.no_grad():
            theta = hyper(cond)
            if hyper.theta0 is not None:
                theta = theta - hyper.theta0
        out.append([float(theta[:, t.offset : t.stop].pow(2).mean()) for t in spec])
    return np.array(out), spec


def _hyperfan(t: hn.spec.TensorInfo, fan: str) -> float:
    if t.role == "weight":
        return (0.5 if t.has_bias else 1.0) / (t.fan_in if fan == "in" else t.fan_out)
    return 0.5


def _check(measured: np.ndarray, intended: float, alternatives: list[float], what: str) -> None:
    """`measured: [SEEDS]` per-seed mean squares. Bound: 4 standard errors across seeds (which
    includes every correlation within a seed). Power: the bound must be under half the relative gap
    to every alternative formula, so this check tells them apart."""
    mean = float(measured.mean())
    bound = 4 * float(measured.std(ddof=1)) / math.sqrt(len(measured)) / intended
    gaps = [abs(a / intended - 1) for a in alternatives if a != intended]
    assert all(bound < g / 2 for g in gaps), (what, "bound too loose to tell the formulas apart", bound, gaps)
    assert abs(mean / intended - 1) <= bound, (what, mean, intended, bound)


# Catches: fan_in and fan_out swapped, the bias halving dropped or applied to bias-less layers, a
# numel-based std, a wrong constant (e.g. Var(b) = 1 or 2/fan), norm tensors not exactly 1 / 0, the
# chunked/shared-head scale or the layer-wise per-head init computed for the wrong tensor.
@pytest.mark.slow
@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise"])
@pytest.mark.parametrize("fan", ["in", "out"])
def test_hyperfan_variance(design: str, fan: str) -> None:
    m, spec = _second_moments(design, "standard", f"hyperfan_{fan}")
    for k, t in enumerate(spec):
        if t.role in ("norm_weight", "norm_bias"):
            assert np.all(m[:, k] == (1.0 if t.role == "norm_weight" else 0.0)), t.name
            continue
        other = "out" if fan == "in" else "in"
        alternatives = [_hyperfan(t, other), 2.0 / t.numel, (1.0 if t.has_bias else 0.5) * _hyperfan(t, fan)]
        _check(m[:, k], _hyperfan(t, fan), alternatives if t.role == "weight" else [1.0, 0.25], t.name)


# Catches: MIP's output blocks initialised by fan-in/hyperfan instead of numel, a missing gain of 2,
# hidden layers Kaiming fan-in instead of fan-out (changes S by width / in_features), no encoding.
@pytest.mark.slow
@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise"])
def test_mip_variance(design: str) -> None:
    m, spec = _second_moments(design, "mip", "mip")
    S = IN + EXTRA_INPUT[design]
    for k, t in enumerate(spec):
        intended = 2.0 * S / t.numel
        _check(m[:, k], intended, [_hyperfan(t, "in"), 2.0 * WIDTH / t.numel, S / t.numel], t.name)


# Catches: "default" that secretly rescales tensors (hyperfan or MIP leaking into it): under
# PyTorch's own init every output coordinate of a design's head(s) has one distribution.
@pytest.mark.slow
@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise"])
def test_default_init_treats_every_tensor_alike(design: str) -> None:
    m, spec = _second_moments(design, "standard", "default")
    common = float(m.mean())
    for k, t in enumerate(spec):
        # the alternative: a per-tensor rule such as 1/fan_in, which differs by >= 2x between tensors
        _check(m[:, k], common, [common * 2, common / 2], t.name)


# LowRank: vectors (biases, norm tensors) are generated whole around θ0, under the same rules.
@pytest.mark.slow
@pytest.mark.parametrize(("parametrization", "init"), [("standard", "hyperfan_in"), ("mip", "mip")])
def test_lowrank_whole_tensors(parametrization: str, init: str) -> None:
    m, spec = _second_moments("lowrank", parametrization, init)
    for k, t in enumerate(spec):
        if t.role == "weight":
            continue  # factored: see test_lowrank_factored_matrices
        if t.role in ("norm_weight", "norm_bias") and init != "mip":
            assert np.all(m[:, k] == 0.0), t.name  # residual: θ0 already holds the 1 / 0
            continue
        intended = 0.5 if init != "mip" else 2.0 * IN / t.numel
        _check(m[:, k], intended, [2 * intended, intended / 2], t.name)


# Catches the factor init that treats U and V as independent although both are read from the same
# hidden vector h (+17% under hyperfan_in at width 256, 16 inputs; ~1/250 of the target under MIP).
@pytest.mark.slow
@pytest.mark.parametrize("init", ["hyperfan_in", "mip"])
def test_lowrank_factored_matrices(init: str) -> None:
    m, spec = _second_moments("lowrank", "mip" if init == "mip" else "standard", init)
    for k, t in enumerate(spec):
        if t.role == "weight":
            _check(m[:, k], _hyperfan(t, "in"), [_hyperfan(t, "out"), 2.0 / t.numel], t.name)


# Catches: theta0 detached, a buffer instead of a parameter, or added after a .detach() in any design.
@pytest.mark.parametrize("design", list(DESIGNS))
def test_theta0_receives_a_gradient_under_mip(design: str) -> None:
    hyper = DESIGNS[design](_spec(), parametrization="mip")
    assert isinstance(hyper.theta0, nn.Parameter) and hyper.theta0.requires_grad
    assert any(p is hyper.theta0 for p in hyper.parameters())  # an optimizer over parameters() trains it
    cond = torch.rand(5, IN)
    weights = torch.randn(5, hyper.spec.numel)
    (hyper(cond) * weights).sum().backward()
    grad: Tensor | None = hyper.theta0.grad
    assert grad is not None
    # θ = θ0 + Δ(cond): d/dθ0 of Σ_c <weights_c, θ_c> is Σ_c weights_c, exactly
    torch.testing.assert_close(grad, weights.sum(0), atol=1e-6, rtol=1e-6)
