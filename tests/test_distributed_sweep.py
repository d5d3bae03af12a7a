"""`hyperparameter-sweep` on several processes equals one process with the same global batch.

The runs go through `tests/dist_float64_worker.py` (`dist_compare`): `hypernet run
hyperparameter-sweep --quick ...` in float64, as one process or as 2 under torchrun's launcher.
They differ only in summation order (each process averages its part of a batch, DDP averages the
parts), ~1e-16 relative per operation: 1e-9 relative on every logged loss and every number of the
summary, 1e-8 of each tensor's scale on the final weights (`dist_compare`), the picks (grid
indices) exactly. The summary's wall and CPU times are this run's, not results: not compared.
Each of these faults, put in on purpose, fails the 2-process test: a separate run's module called
around DDP (each process then trains on its own half), a value's uneven part left unweighted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dist_compare import assert_same_run, records, run_float64
from hypernet.cli import main

pytestmark = pytest.mark.slow

# batch 10 over 2 processes: 5 + 5 for a separate run; a conditioned step's value batch of 10 (one
# value) splits 5 + 5, of 5 (two values) 3 + 2, weighted 6/5 and 4/5
STEPS = 20
ARGS = ["run", "hyperparameter-sweep", "--quick", "--no-progress", "--set", f"steps={STEPS}"]
ARGS += ["--set", f"cond_steps={STEPS}", "--set", "grid=3", "--set", "curve_points=5", "--set", "batch_size=10"]
ARGS += ["--set", "lr=0.01"]
ARGS += ["--set", "checkpoint_every=6", "--set", "n_train=100", "--set", "n_val=100", "--set", "n_test=100"]
TIMING = {"wall_s", "cpu_s", "wall", "cpu", "under_half_cost_wall", "reached"}


@pytest.mark.parametrize("values_per_step", [1, 2])
def test_sweep_two_processes_equal_one_float64(values_per_step: int, tmp_path: Path) -> None:
    """The separate runs (cross-entropy + the penalty of the module's own weights) and the
    conditioned model (one hypernetwork call for the step's values, a batch per value)."""
    args = [*ARGS, "--set", f"values_per_step={values_per_step}"]
    one, two, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    run_float64(one, args, 1)
    run_float64(two, args, 2, "--rows", str(rows))
    assert_same_run(two, one, skip=TIMING)
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    # each process trained on its part only: 5 of every separate batch of 10 (3 runs), and its
    # strided part of each value's batch with its share (values_per_step parts a step)
    split = {1: {0: (5, 1.0), 1: (5, 1.0)}, 2: {0: (3, 6 / 5), 1: (2, 4 / 5)}}[values_per_step]
    for rank in (0, 1):
        seen = [json.loads(line) for line in Path(f"{rows}.{rank}").read_text().splitlines()]
        assert [s for s in seen if len(s) == 2] == [[rank, 5]] * (3 * STEPS)
        weighted = [s for s in seen if len(s) == 3]
        assert len(weighted) == STEPS * values_per_step
        for _, n, share in weighted:
            assert (n, share) == (split[rank][0], pytest.approx(split[rank][1], rel=1e-15))
    # the runs moved (batch losses, so the means of the first and last 4): a comparison of runs
    # that did not would check nothing
    for phase in ("separate-s0-0", "conditioned-s0"):
        losses = [r["loss"] for r in records(one) if r["phase"] == phase]
        assert sum(losses[-4:]) < 0.9 * sum(losses[:4]), phase


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["batch_size=9"], "batch_size=9 does not split evenly over 2 processes"),
        (
            ["batch_size=4", "values_per_step=4"],
            "a batch of 1 sample(s) cannot be shared by 2 processes; a step's batch of 4 gives parts as small as 1: "
            "use a batch size of at least 8",  # 8 / 4 values: 2 rows per value, one per process
        ),
    ],
)
def test_batch_that_does_not_split_is_refused_before_anything_runs(
    sets: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A separate run's batch must split evenly; each value's batch of a conditioned step must give
    every process a row. Exit 2 with one line naming batch_size, no folder written."""
    out = tmp_path / "out"
    args = ["run", "hyperparameter-sweep", "--quick", "--nproc", "2", "--out", str(out)]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size" in err and message in err, err
    assert not out.exists()
