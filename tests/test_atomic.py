"""Atomic writes and strict JSON (hypernet.atomic)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
from torch import nn

import hypernet as hn
from hypernet.atomic import atomic_write, strict_json, write_json
from hypernet.experiments.rundir import claim


def test_write_json_writes_standard_json_with_null_for_non_finite(tmp_path: Path) -> None:
    data = {"bins": [float("nan"), 0.5, float("inf"), -float("inf")], "n": 3, "nested": ({"x": float("nan")},)}
    write_json(tmp_path / "r.json", data)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text

    # a strict parser (one that refuses NaN / Infinity constants) reads it back
    def refuse(name: str) -> float:
        raise AssertionError(f"non-standard constant {name} in the file")

    back = json.loads(text, parse_constant=refuse)
    assert back == {"bins": [None, 0.5, None, None], "n": 3, "nested": [{"x": None}]}


def test_write_json_keeps_key_order(tmp_path: Path) -> None:
    # a summary's methods in the run's order: `hypernet report` rebuilds tables in this order
    write_json(tmp_path / "s.json", {"models": {"hyper-standard": 1, "hyper-mip": 2, "a": {"z": 0, "b": 1}}})
    back = json.loads((tmp_path / "s.json").read_text())
    assert list(back["models"]) == ["hyper-standard", "hyper-mip", "a"] and list(back["models"]["a"]) == ["z", "b"]


def test_strict_json_keeps_finite_values_and_types() -> None:
    data = {"a": 1, "b": 2.5, "c": "NaN", "d": True, "e": None, "f": [0.0, -1e308]}
    assert strict_json(data) == data
    assert math.copysign(1.0, strict_json(-0.0)) == -1.0


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keep.json"
    write_json(path, {"v": 1})

    def broken(tmp: Path) -> None:
        tmp.write_text('{"v": ')  # half-written, then the writer dies
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_written_files_get_the_mode_a_plain_write_would_give(tmp_path: Path) -> None:
    # mkstemp makes the temporary file 0o600, and the rename keeps it: run folders, reports and saved
    # models were unreadable to the user's group and others whatever their umask said
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "new.json", {"v": 1})
        hn.save(nn.Linear(2, 2), tmp_path / "model.safetensors")
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        write_json(kept, {"v": 2})
        claim(tmp_path / "run", {"experiment": "x"})  # a run folder's config.json, written its own way
    finally:
        os.umask(old)
    mode = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert mode == {"new.json": 0o644, "model.safetensors": 0o644, "kept.json": 0o640, "run/config.json": 0o644}
