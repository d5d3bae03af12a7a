"""The continual harness (split-digits, split-mnist, permuted-mnist) on several processes equals
one process with the same global batch.

The float64 runs go through `tests/dist_continual_worker.py`: `hypernet run ...` with float64 as
the default dtype, as one process or as 2 under torchrun's launcher (`distributed.launch`, the
environment `torchrun` gives). Tolerance 1e-9 relative (1e-12 absolute) on every logged loss and
regularizer: the runs differ only in summation order (each process averages its part of the
batch, DDP averages the parts), ~1e-16 relative per operation; over the runs below the largest
gap measured was 8e-13 relative (split-digits' regularizer; 1e-14 for split-MNIST). Weights and
learner state: see `STATE_TOL`. Accuracies are compared exactly (a prediction flips only for a
logit margin below ~1e-12). Each of these faults, put in on purpose, fails these tests: SI
keeping one process's gradient (its state differs), the look-ahead not averaged and an uneven
part left unweighted (the accuracies differ).

What each test shows: the split-digits run holds the joint task-conditioned hypernetworks
(`hyper-standard`, `hyper-mip`: a task id per sample, so weights generated per sample) and the
continual hypernetwork `hnet` (one task per batch: one generated network shared by the batch,
with its output regularizer), EWC, online EWC and SI, so it shows per-sample weights and
task-conditioned runs under DDP; the split-MNIST run adds the look-ahead and a random subset of
earlier tasks in the regularizer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_compare import records, run_float64
from hypernet.cli import main
from hypernet.train import distributed
from hypernet.train.checkpoint import list_checkpoints, load_checkpoint

WORKER = str(Path(__file__).with_name("dist_continual_worker.py"))
pytestmark = pytest.mark.slow

# batch 7 does not split evenly over 2 processes (4 + 3, and 18 + 17 for the joint batch of
# 5 x 7): the weighted parts are checked, the even split is the case of weight 1
DIGITS = ["run", "split-digits", "--quick", "--no-progress", "--set", "steps=40", "--set", "batch_size=7"]
DIGITS += ["--set", "eval_every=10", "--set", "checkpoint_every=4"]
DIGITS += ["--set", "methods=hnet,ewc,online-ewc,si,finetune,per-task,joint"]
RTOL, ATOL = 1e-9, 1e-12
# weights and state, relative to each tensor's largest entry (not per entry: Adam divides by
# sqrt(v) + eps, so an entry whose gradient is rounding noise, the regularizer's at its snapshot,
# takes steps of noise whose relative size is large while their absolute size is not); measured:
# 2e-11 of the tensor's scale (hnet's hypernetwork), 1e-14 or less elsewhere
STATE_TOL = 1e-8


def _worker(out: Path, args: list[str], nproc: int, *own: str) -> None:
    """`hypernet ARGS --out OUT` in float64 on `nproc` processes, through this module's worker."""
    run_float64(out, args, nproc, *own, worker=WORKER)


def _assert_same_run(got: Path, ref: Path) -> None:
    """The same summary (accuracies exactly, as JSON numbers), metrics and final weights and state
    (every learner's buffers: EWC's Fisher, SI's path and kept gradient, the regularizer's targets)."""
    assert json.loads((got / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())
    a, b = records(got), records(ref)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key, value in rb.items():
            if key == "test_acc":
                assert ra[key] == value, (ra, rb)
            elif isinstance(value, float):
                assert ra[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (key, ra, rb)
    phases = sorted({r["phase"] for r in b})
    for phase in phases:
        (pa,), (pb,) = (
            list_checkpoints(got / "checkpoints", phase)[-1:],
            list_checkpoints(ref / "checkpoints", phase)[-1:],
        )
        assert pa.name == pb.name
        ta, tb = load_file(str(pa.with_suffix(".safetensors"))), load_file(str(pb.with_suffix(".safetensors")))
        model_keys = sorted(k for k in tb if k.startswith("model."))
        assert model_keys == sorted(k for k in ta if k.startswith("model."))
        for k in model_keys:  # relative to the tensor's scale (see STATE_TOL)
            scale = float(tb[k].abs().max()) if tb[k].numel() else 0.0
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=STATE_TOL * scale + 1e-300, msg=f"{phase} {k}")


@pytest.fixture(scope="module")
def digits_ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process float64 run every 2-process run of `DIGITS` is compared with."""
    out = tmp_path_factory.mktemp("digits") / "one"
    _worker(out, DIGITS, 1)
    return out


def test_split_digits_two_processes_equal_one_float64(digits_ref: Path, tmp_path: Path) -> None:
    """Every method of the harness, joint and task after task, on 2 processes with uneven parts."""
    two, rows = tmp_path / "two", tmp_path / "rows"
    _worker(two, DIGITS, 2, "--rows", str(rows))
    _assert_same_run(two, digits_ref)
    config = json.loads((two / "config.json").read_text())
    assert config["processes"] == 2
    # each process trained on its part only: 4 + 3 of the sequential batches of 7, 18 + 17 of the
    # joint batches of 35, weighted by its share (a run that gave every process the whole batch
    # would reach the same numbers, so this is checked on its own)
    for rank, parts in ((0, {(4, 8 / 7), (18, 36 / 35)}), (1, {(3, 6 / 7), (17, 34 / 35)})):
        seen = {(n, w) for r, n, w in map(json.loads, Path(f"{rows}.{rank}").read_text().splitlines()) if r == rank}
        assert {n for n, _ in seen} == {n for n, _ in parts}
        for n, w in seen:
            assert w == pytest.approx(dict(parts)[n], rel=1e-15)
    # the run learned: a comparison of runs that did not move would check nothing
    first, last = records(digits_ref)[0], [r for r in records(digits_ref) if r["phase"] == "hyper-standard"][-1]
    assert last["loss"] < 0.5 * first["loss"]
    regs = [r["reg"] for r in records(digits_ref) if r["phase"].startswith(("hnet-task", "si-task", "ewc-task"))]
    assert max(regs) > 1e-4  # the penalties are part of what is compared


def test_failed_process_stops_the_continual_run_and_resume_finishes_it(digits_ref: Path, tmp_path: Path) -> None:
    """Process 1 fails in SI's third task (after its step-4 checkpoint): one error naming it, the
    other stopped, no file half-written; a 2-process `--resume` then ends as the uninterrupted
    one-process run (SI's kept gradient in the checkpoint is the averaged one)."""
    out = tmp_path / "run"
    # batches: 3 joint models x 40, hnet, ewc, online-ewc x 5 tasks x 8; then si-task0, 1 (16);
    # the 6th batch of si-task2
    fail_at = 3 * 40 + 3 * 40 + 16 + 6
    with pytest.raises(distributed.DistributedRunError, match=r"process 1 of 2 failed \(RuntimeError: injected"):
        _worker(out, DIGITS, 2, "--fail-at", str(fail_at))
    assert not list(out.rglob("*.tmp"))
    assert not (out / "summary.json").exists()
    ckpts = list_checkpoints(out / "checkpoints", "si-task2")
    assert [int(p.stem.split("-")[-1]) for p in ckpts] == [4]  # step 4 done, step 8 never reached
    for p in out.glob("checkpoints/*.json"):  # every checkpoint complete (its checksum holds)
        load_file(str(p.with_suffix(".safetensors")))
    assert any(k.endswith("penalty.last_grad") for k in load_file(str(ckpts[0].with_suffix(".safetensors"))))
    _worker(out, [*DIGITS, "--resume"], 2)
    _assert_same_run(out, digits_ref)


MNIST_HNET = ["run", "split-mnist", "--quick", "--no-progress", "--set", "methods=hnet", "--set", "steps_per_task=6"]
MNIST_HNET += ["--set", "batch_size=10", "--set", "lookahead_lr=0.5", "--set", "reg_subset=2"]
MNIST_HNET += ["--set", "train_per_task=100", "--set", "test_per_task=100", "--set", "eval_every=3"]
MNIST_HNET += ["--set", "checkpoint_every=3", "--set", "beta=1.0"]


def test_split_mnist_lookahead_and_subset_two_processes_equal_one_float64(mnist_dir: Path, tmp_path: Path) -> None:
    """The regularizer's look-ahead (the whole batch's step, averaged over the processes) and its
    random subset of earlier tasks (the same draw on every process)."""
    args = [*MNIST_HNET, "--data-dir", str(mnist_dir)]
    one, two = tmp_path / "one", tmp_path / "two"
    _worker(one, args, 1)
    _worker(two, args, 2)
    _assert_same_run(two, one)
    assert max(r["reg"] for r in records(one)) > 1e-4


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)


CLI_DIGITS = ["run", "split-digits", "--quick", "--no-progress", "--set", "steps=20", "--set", "methods=hnet,si"]
CLI_PERMUTED = ["run", "permuted-mnist", "--quick", "--no-progress", "--set", "methods=hnet,ewc"]
CLI_PERMUTED += ["--set", "steps_per_task=4", "--set", "train_per_task=64", "--set", "test_per_task=64"]


@pytest.mark.parametrize("launcher", ["nproc", "torchrun"])
def test_cli_continual_runs_on_two_processes(launcher: str, mnist_dir: Path, tmp_path: Path) -> None:
    """`hypernet run split-digits --nproc 2` and `torchrun ... hypernet run permuted-mnist` as users
    run them (float32): rank 0 alone writes, and the summary is the one-process run's. Accuracies
    exactly (float32 runs differ by ~1e-7 relative per step, far from a logit margin of these few
    test images); losses to 1e-3 relative (float32 rounding grows to ~2e-4 over the quick run's
    steps; a lost or doubled gradient changes them by far more)."""
    args = CLI_DIGITS if launcher == "nproc" else [*CLI_PERMUTED, "--data-dir", str(mnist_dir)]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    if launcher == "nproc":
        result = _cli("-m", "hypernet", *args, "--out", str(two), "--nproc", "2")
    else:
        run = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "hypernet"]
        result = _cli(*run, *args, "--out", str(two))
    assert result.returncode == 0, result.stderr
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    a, b = records(two), records(one)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-3, abs=1e-6)
    assert sorted(p.name for p in (two / "figures").iterdir()) == sorted(p.name for p in (one / "figures").iterdir())
    assert (two / "report.html").exists() and not list(two.rglob("*.tmp"))


def test_checkpoint_of_a_distributed_learner_loads_into_a_plain_one(digits_ref: Path) -> None:
    """The objective DDP wraps keeps the learner's state names: a checkpoint of either kind of run
    loads into the learner itself (so one-process and N-process checkpoints are interchangeable)."""
    from hypernet.experiments.continual import ContinualConfig, build_learner
    from hypernet.methods.learners import Objective

    learner = build_learner(
        ContinualConfig(hidden=(32,), hyper_hidden=(64,), chunk_size=0, embedding_dim=8), "si", 5, 2, 64
    )
    objective = Objective(learner)
    assert objective.state_dict().keys() == learner.state_dict().keys()
    path = list_checkpoints(digits_ref / "checkpoints", "si-task4")[-1]
    load_checkpoint(path, objective.double())
    assert float(learner.penalty.count) == 4  # the state before SI's last end_task


def test_batch_smaller_than_the_processes_is_refused_before_training(tmp_path: Path) -> None:
    import hypernet.experiments as hypernet_experiments

    """A batch of 1 cannot give each of 2 processes a part: exit 2 naming `batch_size`, nothing trained."""
    out = tmp_path / "run"
    args = ["run", "split-digits", "--quick", "--no-progress", "--set", "batch_size=1", "--set", "methods=hnet"]
    result = _cli("-m", "hypernet", *args, "--out", str(out), "--nproc", "2")
    assert result.returncode == 2, result.stderr
    # refused once, by the launcher, before the run folder is claimed: a corrected rerun may use it
    lines = [line for line in result.stderr.splitlines() if line.startswith("hypernet:")]
    assert lines == [
        "hypernet: error: --nproc 2: batch_size: a batch of 1 sample(s) cannot be shared by 2 processes; "
        "use a batch size of at least 2"
    ]
    assert not out.exists()
    # the smallest batch sharded: a task's batch, or the joint learner's (batch // tasks per task)
    cfg = hypernet_experiments.get("split-mnist").make_config({"batch_size": "1"})
    assert hypernet_experiments.get("split-mnist").smallest_batch(cfg) == 1
    cfg = hypernet_experiments.get("permuted-mnist").make_config({"batch_size": "12"})
    assert hypernet_experiments.get("permuted-mnist").smallest_batch(cfg) == 10
