"""Training on several processes (torch.distributed + DDP, gloo on CPU) equals training on one.

Each launch starts 2 Python processes (a few seconds). Tolerances: the runs are float64 and differ
only in summation order (each process averages its half of the batch, DDP averages the halves),
so their losses agree to ~1e-15 per step; 1e-10 after 12 Adam steps is far below what a lost,
doubled or unsynchronised gradient would change (lr 0.02 moves every weight by ~1e-2 per step).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist_worker import make_model, run
from hypernet.cli import main
from hypernet.train import distributed
from hypernet.train.checkpoint import list_checkpoints, load_checkpoint

WORKER = str(Path(__file__).with_name("dist_worker.py"))
pytestmark = pytest.mark.slow


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _final_state(out: Path, phase: str) -> dict[str, torch.Tensor]:
    model = make_model()
    load_checkpoint(list_checkpoints(out / "checkpoints", phase)[-1], model)
    return model.state_dict()


def _assert_same_run(got: Path, ref: Path) -> None:
    a, b = _records(got), _records(ref)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key in ("loss", "abs_err", "probe"):
            if key in rb:
                assert ra[key] == pytest.approx(rb[key], abs=1e-10, rel=0), (ra, rb)
    for phase in ("task", "per-sample"):
        sa, sb = _final_state(got, phase), _final_state(ref, phase)
        for k in sb:
            torch.testing.assert_close(sa[k], sb[k], atol=1e-10, rtol=0)


def test_two_gloo_processes_equal_one_process_task_and_per_sample(tmp_path: Path) -> None:
    """Both phases (shared weights per task, weights per sample) of a 2-process run: the same
    metrics (the recorded loss is the whole batch's) and final weights as 1 process."""
    ref, two = tmp_path / "one", tmp_path / "two"
    run(ref)
    distributed.launch([WORKER, str(two)], 2)
    _assert_same_run(two, ref)
    # a wrong implementation that does not shard (each process trains on the whole batch) or
    # does not average would still write files; this one moved, so the comparison means something
    assert _records(ref)[0]["loss"] != pytest.approx(_records(ref)[-1]["loss"], abs=1e-3)


def test_failed_process_stops_the_run_cleanly_and_resume_finishes_it(tmp_path: Path) -> None:
    """Process 1 raises at step 6: the launcher names it and its error, the other is stopped, no
    file is half-written; a 2-process `--resume` then ends where an uninterrupted run ends."""
    out, ref = tmp_path / "run", tmp_path / "ref"
    with pytest.raises(distributed.DistributedRunError, match=r"process 1 of 2 failed \(RuntimeError: injected"):
        distributed.launch([WORKER, str(out), "--fail-at", "6"], 2)
    assert not list(out.rglob("*.tmp"))  # the stopped process removed its temporary file, if any
    ckpts = list_checkpoints(out / "checkpoints", "task")
    assert [int(p.stem.split("-")[-1]) for p in ckpts] == [4]  # step 4 done, step 8 never reached
    for p in ckpts:  # complete: the JSON is written last and holds the tensors' checksum
        load_file(str(p.with_suffix(".safetensors")))
        load_checkpoint(p, make_model())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    distributed.launch([WORKER, str(out), "--resume"], 2)
    run(ref)
    _assert_same_run(out, ref)


def test_model_not_wrapped_is_refused_in_a_multi_process_run(tmp_path: Path) -> None:
    """Forgetting `wrap` would train each process on its own half, silently: it is an error."""
    code = (
        "import torch, sys; from pathlib import Path; from hypernet.train import distributed, train, TrainConfig\n"
        "distributed.init(torch.device('cpu'))\n"
        "m = torch.nn.Linear(2, 1)\n"
        "try:\n"
        "    train('p', m, m.parameters(), lambda s, g: (m(torch.ones(1, 2)).sum(), {}), TrainConfig(steps=1),"
        " Path(sys.argv[1]), progress=False)\n"
        "except ValueError as e:\n"
        "    assert 'not wrapped' in str(e); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    distributed.launch(["-c", code, str(tmp_path)], 2)


def test_shard_parts_cover_the_batch_once_and_refuse_an_uneven_one() -> None:
    x = torch.arange(12)
    assert distributed.shard(x)[0] is x  # one process: the whole batch
    parts = [distributed.part(x, r, 3) for r in range(3)]
    assert parts[1].tolist() == [1, 4, 7, 10]  # strided: a batch laid out by task gives each every task
    assert sorted(torch.cat(parts).tolist()) == x.tolist()
    with pytest.raises(ValueError, match="12 samples does not split evenly over 5 processes"):
        distributed.part(x, 0, 5)


def test_first_failure_names_the_process_that_recorded_its_error_not_one_that_saw_it_die(tmp_path: Path) -> None:
    """The CI failure this pins: rank 0 died of SIGABRT (gloo, its peer gone) in the same second as
    rank 1 raised; torch's placeholder error data for rank 0 is truthy, so rank 0 was named."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, ProcessFailure

    error_file = tmp_path / "error.json"
    os.environ["TORCHELASTIC_ERROR_FILE"] = str(error_file)
    try:
        ErrorHandler().record_exception(RuntimeError("injected failure at batch 7"))
    finally:
        del os.environ["TORCHELASTIC_ERROR_FILE"]
    recorded = ProcessFailure(local_rank=1, pid=2, exitcode=1, error_file=str(error_file))
    aborted = ProcessFailure(local_rank=0, pid=1, exitcode=-6, error_file=str(tmp_path / "absent.json"))
    aborted.timestamp = recorded.timestamp  # noticed in the same second: the tie that went to rank 0
    rank, failure, why = distributed.first_failure({0: aborted, 1: recorded})
    assert (rank, failure, why) == (1, recorded, "RuntimeError: injected failure at batch 7")
    aborted.timestamp = recorded.timestamp - 1  # even noticed earlier, a signal is not the cause
    assert distributed.first_failure({0: aborted, 1: recorded})[0] == 1
    # nobody recorded anything: the earliest, lowest rank, told by its exit code
    # nobody recorded anything: one the agent did not stop (SIGTERM, or the exit 143 it becomes)
    # is the cause, named by its signal; rank 0 stopped, rank 1 killed from outside
    stopped = ProcessFailure(local_rank=0, pid=3, exitcode=-15, error_file=str(tmp_path / "absent.json"))
    killed = ProcessFailure(local_rank=1, pid=4, exitcode=-9, error_file=str(tmp_path / "absent.json"))
    killed.timestamp = stopped.timestamp
    assert distributed.first_failure({0: stopped, 1: killed})[::2] == (1, "killed by SIGKILL")
    exited = ProcessFailure(local_rank=0, pid=5, exitcode=143, error_file=str(tmp_path / "absent.json"))
    crashed = ProcessFailure(local_rank=1, pid=6, exitcode=3, error_file=str(tmp_path / "absent.json"))
    crashed.timestamp = exited.timestamp
    assert distributed.first_failure({0: exited, 1: crashed})[::2] == (1, "exit code 3")
    # all stopped alike: the earliest, then the lowest rank
    again = ProcessFailure(local_rank=1, pid=7, exitcode=-15, error_file=str(tmp_path / "absent.json"))
    again.timestamp = stopped.timestamp
    assert distributed.first_failure({1: again, 0: stopped})[::2] == (0, "killed by SIGTERM")


@pytest.mark.parametrize(("sig", "raised", "code", "line"), [
    (signal.SIGTERM, SystemExit, 143, "hypernet: stopped by SIGTERM; rerun with --resume to continue"),
    (signal.SIGINT, KeyboardInterrupt, 130, "hypernet: interrupted; rerun with --resume to continue"),
])  # fmt: skip
def test_a_stopped_launcher_reports_a_stop_not_a_failure(
    sig: signal.Signals,
    raised: type[BaseException],
    code: int,
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C or SIGTERM to `--nproc`'s launcher: torch's agent stops the processes and raises
    SignalException; that was reported as "run failed: SignalException", exit 1."""
    import torch.distributed.launcher.api as launcher_api
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def stopped_launch(config: object, entrypoint: str) -> object:
        def run(*args: str) -> None:
            assert os.environ.get("HYPERNET_LAUNCHED") == "1"  # its processes know who reports
            raise SignalException(f"Process 1 got signal: {int(sig)}", sigval=sig)

        return run

    monkeypatch.setattr(launcher_api, "elastic_launch", stopped_launch)
    with pytest.raises(raised) as info:
        distributed.launch(["-c", "pass"], 2)
    assert raised is KeyboardInterrupt or info.value.code == code  # type: ignore[union-attr]
    assert "HYPERNET_LAUNCHED" not in os.environ
    args = ["run", "split-digits", "--quick", "--no-progress", "--nproc", "2", "--out", str(tmp_path / "run")]
    assert main(args) == code
    assert capsys.readouterr().err.strip().splitlines() == [line]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)


MNIST_TEST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist-test"  # (fixture: skip if absent)
CLI_RUN = ["run", "rotation-widths", "--quick", "--no-progress", "--set", "n_f_values=16", "--set", "n_g_values=4"]
CLI_RUN += ["--set", "epochs=1", "--set", "batch_size=32", "--data-dir", str(MNIST_TEST)]
CLI_RUN += ["--set", "fresh_angles=true", "--set", "standardize=true"]  # the full setup's batches: angles per batch


def test_cli_nproc_and_torchrun_equal_one_process(tmp_path: Path, mnist_test_dir: Path) -> None:
    """`hypernet run rotation-widths --nproc 2` and the same command under `torchrun` give the
    summary and metrics of a one-process run. float32 here: the losses are the mean over ranks of
    per-rank means, equal to the whole batch's mean up to float32 rounding (~1e-7 relative per step),
    hence 1e-5 after 8 steps; the accuracies are compared exactly (a prediction flips only if a
    logit margin were below ~1e-5, which this check would then report)."""
    one, two, tr = tmp_path / "one", tmp_path / "two", tmp_path / "torchrun"
    assert main([*CLI_RUN, "--out", str(one)]) == 0  # in this process: one torch start-up less
    for args in (
        ["-m", "hypernet", *CLI_RUN, "--out", str(two), "--nproc", "2"],
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "hypernet", *CLI_RUN,
         "--out", str(tr)],
    ):  # fmt: skip
        result = _cli(*args)
        assert result.returncode == 0, result.stderr
    ref = json.loads((one / "summary.json").read_text())
    for out in (two, tr):
        assert json.loads((out / "summary.json").read_text()) == ref
        assert json.loads((out / "config.json").read_text())["processes"] == 2
        a, b = _records(out), _records(one)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b):
            assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5, rel=0)
        figures = sorted(p.name for p in (out / "figures").iterdir())
        assert figures == sorted(p.name for p in (one / "figures").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "kernel-convergence", "--quick", "--nproc", "2"], "does not train through the training loop"),
        (["run", "ntk-drift", "--quick", "--nproc", "2"], "ntk-drift does not train through the training loop"),
        (["run", "rotation-widths", "--quick", "--nproc", "0"], "--nproc 0: expected a count >= 1"),
        (["run", "rotation-widths", "--quick", "--nproc", "2", "--set", "batch_size=3"], "batch_size=3 does not split"),
    ],
)
def test_cli_nproc_bad_input_exits_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any process starts or any file is written."""
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_under_torchrun_the_refusal_names_the_process_count_not_nproc(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torchrun --nproc-per-node 3 -m hypernet run ...` passes no --nproc: the refusal says "3
    processes", not "--nproc 3" (the trial user gave --nproc-per-node)."""
    from hypernet import cli
    from hypernet.experiments import get

    monkeypatch.setenv("WORLD_SIZE", "3")
    exp = get("uncertainty")
    with pytest.raises(cli.UsageError, match=r"^3 processes: batch_size=128 does not split evenly over 3 processes"):
        cli._world(exp, exp.make_config({}), 1)
    with pytest.raises(cli.UsageError, match=r"^--nproc 3: batch_size=128 does not split evenly"):
        cli._world(exp, exp.make_config({}), 3)
