"""`mip-ablation` and `modularity`: their helpers against hand computations, and the --quick runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import hypernet as hn
from hypernet.cli import main
from hypernet.experiments.mip_ablation import Setup, build_hypernetwork, setups, steps_to
from hypernet.experiments.mip_tasks import regression_function
from hypernet.experiments.modularity import levels_for, params_at, ratio_bound, sizes
from hypernet.experiments.modularity_tasks import EmbeddingMethod, HyperMethod


def test_steps_to_target_is_the_first_evaluation_at_or_below() -> None:
    assert steps_to([0, 10, 20, 30], [1.0, 0.5, 0.2, 0.1], 0.2) == 20
    assert steps_to([0, 10, 20], [1.0, float("nan"), 0.3], 0.2) is None
    assert steps_to([0, 10], [0.1, 0.05], 0.2) == 0


def test_regression_function_matches_a_loop() -> None:
    g = torch.Generator().manual_seed(1)
    gamma, t = torch.rand(3, 4, generator=g, dtype=torch.float64), torch.rand(3, 5, 1, generator=g, dtype=torch.float64)
    got = regression_function(gamma, t)
    for k in range(3):
        for m in range(5):
            want = (
                sum(
                    math.sin(
                        math.pi * (d + 1) * (1 + float(gamma[k, d])) * float(t[k, m, 0])
                        + 2 * math.pi * float(gamma[k, d])
                    )
                    for d in range(4)
                )
                / 2.0
            )
            assert float(got[k, m, 0]) == pytest.approx(want, abs=1e-12)


def test_setups_change_one_axis_at_a_time() -> None:
    regression = setups(("default", "activation", "norm", "input_dim", "design", "optimizer"), "regression")
    assert len(regression) == 1 + 3 + 2 + 3 + 3 + 1  # the default, then every other value of each axis
    for _, s in regression:
        assert sum(getattr(s, k) != getattr(Setup(), k) for k in Setup().__dict__) <= 1
    mnist = setups(("default", "activation", "optimizer"), "loss-conditional")
    assert [s.label() for _, s in mnist] == ["default", "optimizer=sgd"]


@pytest.mark.parametrize("design", ["mlp", "chunked", "layerwise", "lowrank"])
def test_variants_are_the_library_ablations(design: str) -> None:
    target = hn.TargetNetwork(torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)))
    theta0 = target.initial_weights()
    setup = Setup(design=design, input_dim=2)
    built = {
        v: build_hypernetwork(v, setup, target.spec, (16,), theta0) for v in ("standard", "encoding", "residual", "mip")
    }
    assert [built[v].encodes_input for v in ("standard", "encoding", "residual", "mip")] == [False, True, False, True]
    residual = [built[v].theta0 is not None for v in ("standard", "encoding", "residual", "mip")]
    # the low-rank design is residual by construction (W0 + U V^T)
    assert residual == ([True] * 4 if design == "lowrank" else [False, False, True, True])


def test_params_at_interpolates_the_envelope_in_log_log() -> None:
    pts = [(10, 1.0), (100, 0.1), (1000, 0.2), (10000, 0.01)]
    # between (10, 1.0) and (100, 0.1): log-linear, error 0.316... at 10^1.5 parameters
    p, how = params_at(pts, 10**-0.5)
    assert how == "" and p == pytest.approx(10**1.5)
    # the envelope keeps 0.1 at 1000 parameters; 0.05 lies between (1000, 0.1) and (10000, 0.01)
    p, _ = params_at(pts, 0.05)
    assert p == pytest.approx(10 ** (3 + math.log10(2)))
    assert params_at(pts, 2.0) == (10.0, "at most")
    assert params_at(pts, 0.001) == (None, "not reached")


def test_levels_and_bounds() -> None:
    levels = levels_for({"hypernetwork": [0.01, 0.02], "embedding": [0.05, 0.2]})
    assert levels == pytest.approx([0.0525, 0.07875, 0.118125])
    assert ratio_bound("at most", "") == ">=" and ratio_bound("", "at most") == "<=" and ratio_bound("", "") == ""
    assert sizes((0, 4), (1, 2)) == [(), (4,), (4, 4)]


def test_methods_count_their_parameters() -> None:
    hyper = HyperMethod(3, 5, 1, (4,), (8,), bias=True)
    assert hyper.primary_parameters == 5 * 4 + 4 + 4 + 1
    embed = EmbeddingMethod(3, 5, 1, (4,), (8,), embedding=2, bias=False)
    assert embed.primary_parameters == (5 + 2) * 4 + 4
    assert embed.total_parameters == (3 * 8 + 8 + 8 * 2 + 2) + embed.primary_parameters
    x, c = torch.rand(2, 7, 5), torch.rand(2, 3)
    assert hyper(x, c).shape == (2, 7, 1) and embed(x, c).shape == (2, 7, 1)


def _run(name: str, out: Path, data_dir: Path) -> dict:  # type: ignore[type-arg]
    args = ["run", name, "--quick", "--out", str(out), "--no-progress", "--data-dir", str(data_dir)]
    assert main(args) == 0
    assert (out / "report.html").exists()
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def test_mip_ablation_quick(tmp_path: Path, mnist_test_dir: Path) -> None:
    """3 seeds, default configuration, standard vs mip (quick: 300 regression / 200 MNIST steps).

    What is robust at this size (observed on CPU, seeds 0-2): on the loss-conditional task MIP's final
    held-out loss is below standard's for every seed (worst MIP 1.80, best standard 2.11: margin 0.31;
    asserted 0.15); on the regression MIP reaches the target in fewer steps (medians 120 vs 210:
    1.75x; asserted 1.25x) and ends with a lower loss (3.3x; asserted 2x). NOT asserted: steps to
    target on the MNIST tasks, since the pre-declared quick targets (1.1x the standard pilot's final
    loss) are reached at the first evaluations by both variants, so they do not discriminate.
    """
    summary = _run("mip-ablation", tmp_path / "mip", mnist_test_dir)
    runs = summary["runs"]
    assert summary["seeds"] == [0, 1, 2]
    lc = runs["loss-conditional | default"]["variants"]
    assert max(lc["mip"]["final_loss"]) < min(lc["standard"]["final_loss"]) - 0.15, lc
    reg = runs["regression | default"]["variants"]
    assert reg["mip"]["median_steps_to_target"] * 1.25 <= reg["standard"]["median_steps_to_target"], reg
    assert reg["standard"]["final_loss_geomean"] > 2.0 * reg["mip"]["final_loss_geomean"], reg
    for task in ("regression", "loss-conditional", "rotation-conditioned"):
        assert (tmp_path / "mip" / "figures" / f"mip_{task}_default.png").exists()
    assert (tmp_path / "mip" / "curves.json").exists()


def test_modularity_quick(tmp_path: Path, mnist_test_dir: Path) -> None:
    """Teacher family, 2 seeds: at every error level of the table, q needs at least 10x the
    parameters of g (observed: g's smallest size, 9 weights, already beats q with 2,369; the
    interpolated q needs >= 2,000, a ratio >= 200, a lower bound since g's count is an upper bound)."""
    summary = _run("modularity", tmp_path / "mod", mnist_test_dir)
    teacher = summary["families"]["teacher"]
    assert len(teacher["runs"]["hypernetwork"][0]["errors"]) == 2  # seeds
    assert teacher["levels"]
    for row in teacher["levels"]:
        assert row["embedding_primary"] is not None and row["hypernetwork_primary"] is not None, row
        assert row["ratio_primary"] >= 10, row
        assert row["ratio_primary_bound"] in ("", ">="), row  # an exact ratio or a lower bound
    # the smallest g (one linear unit, the known minimal size) beats every q swept
    best_q = min(r["error"] for r in teacher["runs"]["embedding"])
    assert teacher["runs"]["hypernetwork"][0]["hidden"] == []
    assert teacher["runs"]["hypernetwork"][0]["error"] < best_q
    assert set(summary["families"]) == {"teacher", "images", "rotation"}
    assert (tmp_path / "mod" / "figures" / "modularity.png").exists()
