"""`mip-ablation` and `split-mnist-transfer` on several processes equal one process with the same
global batch.

The float64 runs go through `tests/dist_mip_transfer_worker.py`: `hypernet run ...` with float64 as
the default dtype, as one process or as 2 under torchrun's launcher (`distributed.launch`, the
environment `torchrun` gives). The runs differ only in summation order (each process averages its
part of the batch, DDP averages the parts): ~1e-16 relative per operation. Tolerances: 1e-9
relative (1e-12 absolute) on every loss and held-out loss, the continual tests' bound; the largest
gaps measured over the runs below were 8e-16 relative (mip-ablation's held-out losses, its
batch-norm configuration excepted: `BN_RTOL`) and 9e-16 (transfer's logged losses), far under it.
Faults put in on purpose move them by far more: processes that do not average their gradients
(no DDP) move mip-ablation's held-out losses by 1e-3 to 1, an uneven part of a few-shot batch left
unweighted moves transfer's logged losses by 2e-3 to 1e-1 (its accuracies here do not move, so
the losses are what catch it). Accuracies exactly (a prediction flips only for a logit margin
below ~1e-12). Weights: `STATE_TOL`.

And since a run that gave every process the whole batch would reach the same numbers, each
process's parts are recorded and checked (`--rows`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dist_compare import records, run_float64
from hypernet.train.checkpoint import list_checkpoints

WORKER = str(Path(__file__).with_name("dist_mip_transfer_worker.py"))
pytestmark = pytest.mark.slow
RTOL, ATOL = 1e-9, 1e-12
# weights relative to each tensor's largest entry (Adam divides by sqrt(v) + eps, so an entry whose
# gradient is rounding noise takes steps whose relative size is large while their absolute size
# is not); measured: 4e-13 of the tensor's scale at most
STATE_TOL = 1e-8


def _worker(out: Path, args: list[str], nproc: int, *own: str) -> None:
    """`hypernet ARGS --out OUT` in float64 on `nproc` processes, through this module's worker."""
    run_float64(out, args, nproc, *own, worker=WORKER)


def _parts(rows: Path, rank: int) -> list[tuple[int, float]]:
    return [(n, w) for r, n, w in map(json.loads, Path(f"{rows}.{rank}").read_text().splitlines()) if r == rank]


def _assert_close(got: Any, ref: Any, where: str = "", rtol: float = RTOL) -> None:
    """The same JSON structure; floats to `rtol`/ATOL (NaN where NaN), everything else exactly; the
    entries of the batch-norm configuration to `BN_RTOL`."""
    if isinstance(ref, dict):
        assert isinstance(got, dict) and got.keys() == ref.keys(), where
        if ref.get("configuration") == "norm=batch":
            rtol = BN_RTOL
        for key in ref:
            _assert_close(got[key], ref[key], f"{where}/{key}", BN_RTOL if "norm=batch" in key else rtol)
    elif isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref), where
        for i, (a, b) in enumerate(zip(got, ref)):
            _assert_close(a, b, f"{where}[{i}]", rtol)
    elif isinstance(ref, float) and not isinstance(got, bool):
        assert isinstance(got, float), where
        assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref, rel=rtol, abs=ATOL), (where, got, ref)
    else:
        assert got == ref, (where, got, ref)


# A batch norm inside the hypernetwork (over the step's 4 conditions) makes a training run amplify
# rounding about 1e10-fold: in ONE process, initial weights perturbed by 1e-15 relative move the
# held-out losses of `norm=batch` below by 2e-11 (standard) and 2e-5 (mip) within its 12 steps,
# every other configuration by 2e-15 or less. Its 2-process gap is of that size (4e-11, 9e-6), so
# it is held to 1e-3 relative: 50x the measured sensitivity, while processes that train without
# averaging their gradients move its losses by 2e-2 (standard) and 1e-1 (mip).
BN_RTOL = 1e-3

# every design and normalisation of the hypernetwork on the regression task (a batch norm inside
# the hypernetwork sees the whole step's conditions on every process), the two MNIST tasks at the
# default; 2 of 8 points per function and 3 of 6 images per gamma per process
MIP = ["run", "mip-ablation", "--quick", "--no-progress", "--set", "seeds=1", "--set", "axes=design,norm"]
MIP += ["--set", "regression_steps=12", "--set", "mnist_steps=6", "--set", "eval_every=3", "--set", "n_train=120"]
MIP += ["--set", "n_eval=60", "--set", "regression_groups=4", "--set", "regression_points=8"]
MIP += ["--set", "mnist_groups=2", "--set", "mnist_group_size=6"]


def test_mip_ablation_two_processes_equal_one_float64(mnist_dir: Path, tmp_path: Path) -> None:
    args = [*MIP, "--data-dir", str(mnist_dir)]
    one, two, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    _worker(one, args, 1)
    _worker(two, args, 2, "--rows", str(rows))
    ref = json.loads((one / "summary.json").read_text())
    _assert_close(json.loads((two / "summary.json").read_text()), ref)
    curves = json.loads((one / "curves.json").read_text())
    _assert_close(json.loads((two / "curves.json").read_text()), curves)
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    assert sorted(p.name for p in (two / "figures").iterdir()) == sorted(p.name for p in (one / "figures").iterdir())
    assert not list(two.rglob("*.tmp"))
    # each process trained on its half of every condition's samples: 4 of 8 points, 3 of 6 images;
    # 12 steps x 12 regression fits (6 setups x 2 variants), 6 steps x 2 images draws x 2 fits x 2 tasks
    for rank in (0, 1):
        parts = _parts(rows, rank)
        assert sorted(set(parts)) == [(3, 1.0), (4, 1.0)]
        assert parts.count((4, 1.0)) == 12 * 12 and parts.count((3, 1.0)) == 6 * 2 * 2 * 2
    # every run moved (its held-out loss by more than 1%) and the default regression learned; none diverged:
    # a comparison of runs that did not move checks nothing
    for key, run in curves.items():
        for variant, c in run.items():
            loss = c["loss"][0]
            assert max(abs(v - loss[0]) for v in loss) > 0.01 * loss[0], (key, variant, loss)
            assert key != "regression | default" or loss[-1] < 0.97 * loss[0], (key, variant, loss)
    assert all(v["diverged"] == 0 for r in ref["runs"].values() for v in r["variants"].values())


# the few-shot batches: 5 images split 3 + 2 (weighted 6/5 and 4/5) and 12 split 6 + 6
TRANSFER = ["run", "split-mnist-transfer", "--quick", "--no-progress", "--set", "steps_per_task=4"]
TRANSFER += ["--set", "few_steps=6", "--set", "train_per_task=60", "--set", "test_per_task=100"]
TRANSFER += ["--set", "shots=5,12", "--set", "batch_size=12", "--set", "checkpoint_every=3", "--set", "hidden=16"]


def test_split_mnist_transfer_two_processes_equal_one_float64(mnist_dir: Path, tmp_path: Path) -> None:
    """Pretraining (the continual harness) and every few-shot phase, uneven parts included."""
    args = [*TRANSFER, "--data-dir", str(mnist_dir)]
    one, two, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    _worker(one, args, 1)
    _worker(two, args, 2, "--rows", str(rows))
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
    a, b = records(two), records(one)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key, value in rb.items():
            if key == "test_acc":
                assert ra[key] == value, (ra, rb)
            elif isinstance(value, float):
                assert ra[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (key, ra, rb)
    for phase in sorted({r["phase"] for r in b}):
        (pa,), (pb,) = (
            list_checkpoints(two / "checkpoints", phase)[-1:],
            list_checkpoints(one / "checkpoints", phase)[-1:],
        )
        assert pa.name == pb.name
        ta, tb = load_file(str(pa.with_suffix(".safetensors"))), load_file(str(pb.with_suffix(".safetensors")))
        assert ta.keys() == tb.keys()
        for k in (k for k in tb if k.startswith("model.")):
            scale = float(tb[k].abs().max()) if tb[k].numel() else 0.0
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=STATE_TOL * scale + 1e-300, msg=f"{phase} {k}")
    assert sorted(p.name for p in (two / "figures").iterdir()) == sorted(p.name for p in (one / "figures").iterdir())
    # 3 arms x 6 steps for each number of shots, each process its part, weighted by its share
    for rank, uneven in ((0, (3, 6 / 5)), (1, (2, 4 / 5))):
        parts = _parts(rows, rank)
        assert len(parts) == 2 * 3 * 6
        assert sorted(set(parts)) == sorted({uneven, (6, 1.0)})
        for n, w in parts:
            assert w == pytest.approx(dict([uneven, (6, 1.0)])[n], rel=1e-15)
    # every few-shot phase moved its loss (the new embedding at lr 0.1 on 5 images need not lower
    # it), and the plain networks learned: a comparison of runs that did not move checks nothing
    for phase in sorted({r["phase"] for r in b if "-n" in r["phase"]}):
        loss = [r["loss"] for r in b if r["phase"] == phase]
        assert max(abs(v - loss[0]) for v in loss) > 0.05 * loss[0], (phase, loss)
        assert "hnet-embedding" in phase or loss[-1] < 0.97 * loss[0], (phase, loss)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hypernet", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("hypernet:")]


def test_mip_ablation_samples_that_do_not_split_evenly_are_refused(tmp_path: Path) -> None:
    """7 points per function cannot be split equally by 2 processes: exit 2 naming the settings,
    before the run folder exists; with both kinds of task, the count that must split is the
    greatest common divisor of theirs."""
    import hypernet.experiments as experiments

    out = tmp_path / "run"
    args = ["run", "mip-ablation", "--quick", "--no-progress", "--set", "tasks=regression"]
    result = _cli(*args, "--set", "regression_points=7", "--out", str(out), "--nproc", "2")
    assert result.returncode == 2, result.stderr
    assert _error_lines(result) == [
        "hypernet: error: --nproc 2: regression_points / mnist_group_size: a step's 7 samples do not split evenly "
        "over 2 processes; use a multiple of 2 (each process takes an equal part of every step's batch)"
    ]
    assert not out.exists()
    exp = experiments.get("mip-ablation")
    assert exp.distributed and exp.global_batch is not None
    cfg = exp.make_config({"regression_points": "12", "mnist_group_size": "18"})
    assert exp.global_batch(cfg) == 6
    cfg = exp.make_config({"tasks": "loss-conditional", "regression_points": "7", "mnist_group_size": "18"})
    assert exp.global_batch(cfg) == 18


def test_split_mnist_transfer_batch_smaller_than_the_processes_is_refused(tmp_path: Path) -> None:
    """One labelled image cannot give each of 2 processes a part: exit 2 naming the settings, nothing run."""
    import hypernet.experiments as experiments

    out = tmp_path / "run"
    result = _cli("run", "split-mnist-transfer", "--quick", "--set", "shots=1,10", "--out", str(out), "--nproc", "2")
    assert result.returncode == 2, result.stderr
    assert _error_lines(result) == [
        "hypernet: error: --nproc 2: batch_size / shots / train_per_task: a batch of 1 sample(s) cannot be shared "
        "by 2 processes; make each at least 2"
    ]
    assert not out.exists()
    exp = experiments.get("split-mnist-transfer")
    assert exp.distributed and exp.smallest_batch is not None
    assert exp.smallest_batch(exp.make_config({"shots": "20,50", "batch_size": "16"})) == 16
    assert exp.smallest_batch(exp.make_config({"shots": "20,50", "train_per_task": "8"})) == 8
    assert exp.smallest_batch(exp.make_config({"shots": "20,50"})) == 20
