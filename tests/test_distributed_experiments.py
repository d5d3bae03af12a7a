"""`inr` and `modularity` on several processes equal one process with the same global batch.

The runs go through `tests/dist_experiment_worker.py`: `hypernet run NAME --quick` (made smaller)
in float64, as one process or as 2 gloo processes under torchrun's launcher (`distributed.launch`,
the environment `torchrun` gives). Tolerance 1e-9 relative (1e-12 absolute) on every number of the
summary (PSNR, errors, parameters at each error level) and every logged loss and test PSNR, and
1e-10 of each tensor's largest entry on the final weights: the runs differ only in summation order
(each process averages its half of the batch, DDP averages the halves), ~1e-16 relative per
operation, grown over a few Adam steps by a few orders at most. Measured: 4e-16 relative on the
numbers, 1e-14 of the tensor's scale on the weights. A lost, doubled or unsynchronised gradient
changes them at the 1e-3 level or more (lr 1e-3 moves every weight by ~1e-3 per Adam step). The
seconds a run took are not compared. Because an unsharded run (every process the whole batch)
reaches the same numbers, the parts each process trained on are checked on their own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from dist_compare import records, run_float64
from hypernet.cli import main
from hypernet.train import distributed
from hypernet.train.checkpoint import list_checkpoints

WORKER = str(Path(__file__).with_name("dist_experiment_worker.py"))
pytestmark = pytest.mark.slow
RTOL, ATOL = 1e-9, 1e-12
WEIGHT_TOL = 1e-10  # of each tensor's largest entry (Adam's steps on rounding-noise gradients, see the doc)

INR = ["run", "inr", "--quick", "--no-progress", "--set", "steps=6", "--set", "patch_steps=4"]
INR += ["--set", "batch_size=8", "--set", "pixels=16", "--set", "train_images=200", "--set", "test_images=40"]
INR += ["--set", "fit_images=4", "--set", "fit_steps=5", "--set", "eval_every=3", "--set", "checkpoint_every=3"]
MODULARITY = ["run", "modularity", "--quick", "--no-progress", "--set", "seeds=1", "--set", "teacher_steps=40"]
MODULARITY += ["--set", "images_steps=4", "--set", "images_train=64", "--set", "images_test=20"]
MODULARITY += ["--set", "rotation_train=128", "--set", "test_images=60", "--set", "trunk=32"]


def _worker(out: Path, args: list[str], nproc: int, *own: str) -> None:
    """`hypernet ARGS --out OUT` in float64 on `nproc` processes, through this module's worker."""
    run_float64(out, args, nproc, *own, worker=WORKER)


def _assert_close(got: Any, ref: Any, where: str = "") -> None:
    """The same JSON tree: numbers within RTOL/ATOL (timings skipped), everything else equal."""
    if isinstance(ref, dict):
        assert set(got) == set(ref), where
        for key, value in ref.items():
            if "seconds" not in key:
                _assert_close(got[key], value, f"{where}.{key}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), where
        for k, (a, b) in enumerate(zip(got, ref)):
            _assert_close(a, b, f"{where}[{k}]")
    elif isinstance(ref, float) and not isinstance(got, bool):
        assert got == pytest.approx(ref, rel=RTOL, abs=ATOL) or (math.isnan(got) and math.isnan(ref)), where
    else:
        assert got == ref, where


def _assert_same_run(got: Path, ref: Path) -> None:
    _assert_close(json.loads((got / "summary.json").read_text()), json.loads((ref / "summary.json").read_text()))
    a, b = records(got), records(ref)
    assert [(r["phase"], r["step"]) for r in a] == [(r["phase"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        _assert_close(ra, rb, f"{rb['phase']} step {rb['step']}")
    for phase in sorted({r["phase"] for r in b}):  # the final weights of every model trained
        (pa,), (pb,) = (
            list_checkpoints(got / "checkpoints", phase)[-1:],
            list_checkpoints(ref / "checkpoints", phase)[-1:],
        )
        assert pa.name == pb.name
        ta, tb = load_file(str(pa.with_suffix(".safetensors"))), load_file(str(pb.with_suffix(".safetensors")))
        assert sorted(ta) == sorted(tb)
        for k in (k for k in tb if k.startswith("model.")):
            scale = float(tb[k].abs().max()) if tb[k].numel() else 0.0
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=WEIGHT_TOL * scale + 1e-300, msg=f"{phase} {k}")
    assert json.loads((got / "config.json").read_text())["processes"] == 2
    names = sorted(p.name for p in (got / "figures").iterdir())
    assert names == sorted(p.name for p in (ref / "figures").iterdir()) and names
    assert not list(got.rglob("*.tmp"))


def _assert_halves(rows: Path, batches: set[int]) -> None:
    """Each of the 2 processes trained on half of every global batch (of the sizes `batches`)."""
    for rank in (0, 1):
        seen = {(n, k) for r, n, k in map(json.loads, Path(f"{rows}.{rank}").read_text().splitlines()) if r == rank}
        assert seen == {(n, n // 2) for n in batches}, (rank, seen)


def test_inr_two_processes_equal_one_float64(tmp_path: Path) -> None:
    """Both conditioned models (the hypernetwork generating a coordinate network per image, and
    the embedding baseline) on the digits and the sample patches, and everything computed after
    training from their weights: held-out PSNR, per-image fits, super-resolution."""
    one, two, rows = tmp_path / "one", tmp_path / "two", tmp_path / "rows"
    _worker(one, INR, 1)
    _worker(two, INR, 2, "--rows", str(rows))
    _assert_same_run(two, one)
    _assert_halves(rows, {8})
    # the models learned: a comparison of runs that did not move would check nothing
    losses = [r["loss"] for r in records(one) if r["phase"] == "digits-hypernetwork-seed0"]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.fixture(scope="module")
def modularity_ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process float64 run every 2-process run of `MODULARITY` is compared with."""
    out = tmp_path_factory.mktemp("modularity") / "one"
    _worker(out, _modularity_args(), 1)
    return out


def _modularity_args() -> list[str]:
    from conftest import DATASETS, need_shared

    return [*MODULARITY, "--data-dir", str(need_shared(DATASETS / "mnist-test"))]


def test_modularity_two_processes_equal_one_float64(modularity_ref: Path, tmp_path: Path) -> None:
    """Every family (teacher and images: batches of 32; rotation: 64) and both methods."""
    two, rows = tmp_path / "two", tmp_path / "rows"
    _worker(two, _modularity_args(), 2, "--rows", str(rows))
    _assert_same_run(two, modularity_ref)
    _assert_halves(rows, {32, 64})
    summary = json.loads((modularity_ref / "summary.json").read_text())
    assert set(summary["families"]) == {"teacher", "images", "rotation"}
    losses = [r["loss"] for r in records(modularity_ref) if r["phase"] == "teacher-hypernetwork-h0-seed0"]
    assert losses[-1] < 0.8 * losses[0], losses  # measured: 0.17 -> 0.096


def test_modularity_failed_process_stops_the_run_and_resume_finishes_it(modularity_ref: Path, tmp_path: Path) -> None:
    """Process 1 fails at the 25th batch of the third fit (teacher, embedding of width 4; its
    step-20 checkpoint written): one error naming it, no file half-written, no summary; a
    2-process `--resume` skips the two finished fits, continues the third from step 20 and ends
    as the uninterrupted one-process run (modularity trains through the training loop)."""
    out = tmp_path / "run"
    with pytest.raises(distributed.DistributedRunError, match=r"process 1 of 2 failed \(RuntimeError: injected"):
        _worker(out, _modularity_args(), 2, "--fail-at", str(2 * 40 + 25))
    assert not list(out.rglob("*.tmp")) and not (out / "summary.json").exists()
    ckpts = list_checkpoints(out / "checkpoints", "teacher-embedding-h4-seed0")
    assert [int(p.stem.split("-")[-1]) for p in ckpts] == [20]
    _worker(out, [*_modularity_args(), "--resume"], 2)
    _assert_same_run(out, modularity_ref)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "inr", "--quick", "--nproc", "2", "--set", "batch_size=7"], "batch_size=7 does not split"),
        (["run", "modularity", "--quick", "--nproc", "3"], "steps take 32 samples (or a multiple), which do not split"),
        (
            ["run", "modularity", "--quick", "--nproc", "3", "--set", "families=rotation"],
            "process count that divides 64",
        ),
    ],
)
def test_uneven_batch_is_refused_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused with exit 2 before any process starts or any file is written."""
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()
