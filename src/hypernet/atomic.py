"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)`, then move the finished file to `path` in one step.

    The file gets the mode a plain `open(path, "w")` would give it: that of the file it replaces,
    else 0o666 less the umask (the temporary file is made 0o600, which the rename would keep)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode(path))  # after the fsync: a read-only mode must not stop it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_mode(path: Path) -> int:
    """The mode `open(path, "w")` would give: the existing file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read it: set, then put back at once
        os.umask(umask)
        return 0o666 & ~umask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict_json(data: Any) -> Any:
    """`data` with every NaN / infinite float replaced by None.

    Python's `json` writes them as bare `NaN` / `Infinity`, which RFC 8259 does not allow, so other
    readers (`jq`, JavaScript, most JSON libraries) refuse the file; `null` is what they expect for
    "no value" (e.g. an empty reliability-diagram bin)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(value) for value in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Write `data` as standard JSON (non-finite floats as `null`, see `strict_json`), atomically.

    Keys keep their order: a run's summary lists methods and rows in the order the run made them, and
    `hypernet report` rebuilds its tables from that order (sorted keys reordered the rows)."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    write_text(path, text + "\n")
