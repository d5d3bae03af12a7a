"""The kernel experiments in --quick mode: they run end to end and show the paper's claims' shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypernet.cli import main


def _run(name: str, out: Path, *sets: str) -> dict:  # type: ignore[type-arg]
    args = ["run", name, "--quick", "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert (out / "report.html").exists()
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def test_kernel_convergence_error_falls_with_width(tmp_path: Path) -> None:
    summary = _run("kernel-convergence", tmp_path / "kc")
    errs = [summary["widths"][w]["ntk_single_rel_err"] for w in ("16", "64", "256")]
    assert errs[0] > errs[1] > errs[2], errs
    assert summary["fit"]["ntk_single_slope"] < -0.25  # theory: -0.5
    assert (tmp_path / "kc" / "figures" / "kernel_convergence.png").exists()


def test_ntk_drift_shape(tmp_path: Path) -> None:
    summary = _run("ntk-drift", tmp_path / "drift")
    narrow = summary["wide_f_narrow_g"]
    wide = summary["wide_g"]
    # widening g makes the kernel settle ...
    assert wide["n_f=256,n_g=64"]["ntk_rel_change"] < 0.5 * wide["n_f=256,n_g=2"]["ntk_rel_change"]
    # ... widening only f does not (a kernel regime would shrink the change ~sqrt(8)x over this range)
    assert narrow["n_f=512,n_g=8"]["ntk_rel_change"] > 0.5 * narrow["n_f=64,n_g=8"]["ntk_rel_change"]
    for res in list(narrow.values()) + list(wide.values()):
        assert res["loss_end"] < res["loss_start"]  # training happened


def test_hyperkernel_images_beats_plain_ntk(tmp_path: Path, mnist_test_dir: Path) -> None:
    summary = _run("hyperkernel-images", tmp_path / "hk", f"data_dir={mnist_test_dir}")
    psnr = summary["psnr"]
    hyper, plain = psnr["hyperkernel (NTK of h)"], psnr["plain NTK of g (x only)"]
    # the hyperkernel sees the context z; the NTK of g alone can only predict one mean image
    assert hyper["mnist_completion_psnr_db"] > plain["mnist_completion_psnr_db"] + 1.0
    assert hyper["sample_images_psnr_db"] > plain["sample_images_psnr_db"] + 3.0


def test_rotation_widths_runs(tmp_path: Path, mnist_test_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERNET_DATA", str(tmp_path / "no-cache"))  # --data-dir alone must suffice
    args = ["run", "rotation-widths", "--quick", "--out", str(tmp_path / "rw"), "--no-progress"]
    assert main([*args, "--data-dir", str(mnist_test_dir)]) == 0
    config = json.loads((tmp_path / "rw" / "config.json").read_text())
    assert config["config"]["data_dir"] == str(mnist_test_dir.resolve())
    assert not (tmp_path / "no-cache").exists()
    summary = json.loads((tmp_path / "rw" / "summary.json").read_text())
    assert len(summary["runs"]) == 4
    assert all(0.0 <= r["test_error"] <= 1.0 for r in summary["runs"].values())
    assert (tmp_path / "rw" / "figures" / "rotation_test_error.png").exists()


def test_phase_timer_keeps_a_finished_phase_time_across_a_resume(tmp_path: Path) -> None:
    import time

    from hypernet.experiments.registry import PhaseTimer, RunContext

    ctx = RunContext(out=tmp_path)
    first = PhaseTimer(ctx).train("a", lambda: time.sleep(0.05))
    assert first["wall_s"] >= 0.05 and first["cpu_s"] < first["wall_s"] and not first["partial"]
    # a resumed run calls the finished phase again (it loads its checkpoint): the entry stays
    again = PhaseTimer(ctx).train("a", lambda: time.sleep(0.2))
    assert again == first
    # a phase not finished before is timed by the call that finishes it; with a checkpoint of it
    # already in the folder (a killed attempt), it is flagged partial
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "b-00000010.json").write_text("{}")
    b = PhaseTimer(ctx).train("b", lambda: time.sleep(0.1))
    assert b["wall_s"] >= 0.1 and b["partial"]
