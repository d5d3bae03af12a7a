from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypernet.cli import main

CHANCE = 0.5  # binary tasks


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hypernet", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name, res in summary["models"].items():
        assert res["mean_acc"] > CHANCE + 0.3, (name, res)  # far above chance after 150 steps
        assert len(res["per_task_acc"]) == 5
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2 and "per_task_acc" in report
    assert {p.name for p in (out / "figures").iterdir()} == {"learning_curves.png", "per_task_accuracy.png"}
    assert any((out / "checkpoints").glob("hyper-mip-*.safetensors"))
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "split-digits", "--set", "colour=red"], "--set colour: unknown key for split-digits"),
        (["run", "split-digits", "--set", "steps=many"], "--set steps=many: expected int"),
        (["run", "split-digits", "--set", "steps"], "--set steps: expected key=value"),
        (["run", "split-digits", "--device", "tpu"], "--device tpu: expected cpu or cuda"),
        (["report", "/nonexistent/dir"], "not a run directory"),
        (["frobnicate"], "invalid choice"),
        (
            ["run", "split-digits", "--set", "optimizer=lbfgs"],
            "--set optimizer=lbfgs: expected one of adam, adamw, sgd",
        ),
        (["run", "split-digits", "--set", "parametrizations=mip,foo"], "parametrizations: each must be"),
        (
            ["run", "rotation-widths", "--quick", "--set", "data_dir=/nonexistent"],
            "MNIST: t10k-images-idx3-ubyte.gz not found in /nonexistent",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = _cli(*args, "--out", str(tmp_path / "x")) if args[0] == "run" else _cli(*args)
    assert res.returncode == 2, res
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_occupied_out_dir_is_protected(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "split-digits", "--quick", "--set", "steps=10", "--out", str(out), "--no-progress"]) == 0
    res = _cli("run", "split-digits", "--quick", "--set", "steps=10", "--out", str(out))
    assert res.returncode == 2 and "already holds a run; pass --resume" in res.stderr


def test_killed_run_resumes_to_identical_summary(tmp_path: Path) -> None:
    args = ["run", "split-digits", "--quick", "--set", "steps=300", "--set", "checkpoint_every=20", "--no-progress"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypernet", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("hyper-mip-*.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "summary.json").exists()
    resumed = _cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text()) == json.loads((tmp_path / "ref" / "summary.json").read_text())
    ref_metrics = (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert (out / "metrics.jsonl").read_text() == ref_metrics
