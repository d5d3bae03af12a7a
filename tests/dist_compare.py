"""Shared by the float64 distributed tests of `uncertainty` and `hyperparameter-sweep`: run
`hypernet ARGS` through `tests/dist_float64_worker.py` on 1 or N processes, and compare two runs.

Tolerances (why: see each test module): 1e-9 relative (1e-12 absolute) on every logged float and
every float of the summary, accuracies exactly, final weights to 1e-8 of each tensor's largest
entry (Adam divides by sqrt(v) + eps: an entry whose gradient is rounding noise takes noise-sized
steps of large relative size, small in absolute size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from hypernet.train import distributed
from hypernet.train.checkpoint import list_checkpoints

WORKER = str(Path(__file__).with_name("dist_float64_worker.py"))
RTOL, ATOL, STATE_TOL = 1e-9, 1e-12, 1e-8


def run_float64(out: Path, args: list[str], nproc: int, *own: str, worker: str = WORKER) -> None:
    """`hypernet ARGS --out OUT` in float64 on `nproc` processes through `worker` (a script that
    takes `[OWN...] -- ARGS`; `own`: its options): one process as a plain subprocess, N under
    torchrun's launcher. Every float64 distributed test runs its workers through this."""
    argv = [worker, *own, "--", *args, "--out", str(out)]
    if nproc > 1:
        distributed.launch(argv, nproc)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr


def records(out: Path) -> list[dict[str, Any]]:
    """The run's `metrics.jsonl`."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_close_tree(got: Any, ref: Any, skip: Collection[str] = (), path: str = "") -> None:
    """The same nested summary: integers, strings and booleans exactly, floats to RTOL/ATOL."""
    if isinstance(ref, dict):
        assert set(got) == set(ref), path
        for key in ref:
            if key not in skip:
                assert_close_tree(got[key], ref[key], skip, f"{path}.{key}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (a, b) in enumerate(zip(got, ref)):
            assert_close_tree(a, b, skip, f"{path}[{i}]")
    elif isinstance(ref, float) and not path.endswith(".accuracy"):
        assert got == pytest.approx(ref, rel=RTOL, abs=ATOL, nan_ok=True), path
    else:
        assert got == ref, path


def assert_same_run(got: Path, ref: Path, skip: Collection[str] = ()) -> None:
    """The same summary, logged losses (with their parts) and final weights of every phase."""
    assert_close_tree(
        json.loads((got / "summary.json").read_text()), json.loads((ref / "summary.json").read_text()), skip
    )
    a, b = records(got), records(ref)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key, value in rb.items():
            if isinstance(value, float):
                assert ra[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (key, ra, rb)
    for phase in sorted({r["phase"] for r in b}):
        pa, pb = (list_checkpoints(out / "checkpoints", phase)[-1] for out in (got, ref))
        assert pa.name == pb.name
        ta, tb = load_file(str(pa.with_suffix(".safetensors"))), load_file(str(pb.with_suffix(".safetensors")))
        keys = sorted(k for k in tb if k.startswith("model."))
        assert keys and keys == sorted(k for k in ta if k.startswith("model."))
        for k in keys:
            scale = float(tb[k].abs().max()) if tb[k].numel() else 0.0
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=STATE_TOL * scale + 1e-300, msg=f"{phase} {k}")
