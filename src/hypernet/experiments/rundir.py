"""Run folders: a new run never overwrites anything, a resumed run continues its own folder only.

`check_out` decides, before anything is written, whether `--out` may be used; `claim` makes the
folder a run by creating `config.json` without replacing one (so two runs started together into
the same folder cannot both claim it); `new_run_dir` makes a unique default folder; and
`clean_leftovers` removes what a killed run left behind (temporary files, orphan and superseded
checkpoints) before it is resumed.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from hypernet.atomic import file_mode
from hypernet.experiments.settings import ConfigError
from hypernet.train.checkpoint import prune_checkpoints


class RunDirError(ConfigError):
    """`--out` cannot be used for this run (the command line exits with code 2)."""


def read_run_config(out: Path) -> dict[str, Any]:
    """`out/config.json`, or `RunDirError` naming it when unreadable."""
    path = out / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: not a readable run config ({exc})") from exc
    if not isinstance(data, dict) or "experiment" not in data:
        raise RunDirError(f"{path}: not a run config (no 'experiment' in it)")
    return data


def check_out(out: Path, experiment: str, resume: bool) -> dict[str, Any] | None:
    """Whether `out` may take this run; the saved config when resuming. Writes nothing.

    A new run needs `out` absent or an empty folder; `--resume` needs a run of the same experiment.
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: is a file, not a folder")
    if not out.exists():
        # the folder will be created: its nearest existing ancestor must be a folder we can write in
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir():
            raise RunDirError(f"--out {out}: {parent} is a file, so the folder cannot be created there")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunDirError(f"--out {out}: no permission to create a folder in {parent}")
    is_run = (out / "config.json").exists()
    if resume:
        if not is_run:
            raise RunDirError(f"--resume: {out} holds no run to resume (no config.json)")
        saved = read_run_config(out)
        if saved["experiment"] != experiment:
            raise RunDirError(f"--resume: {out} holds a run of {saved['experiment']}, not {experiment}")
        return saved
    if is_run:
        saved = read_run_config(out)
        if saved["experiment"] == experiment:
            raise RunDirError(f"--out {out}: already holds a run; pass --resume to continue it, or choose a new folder")
        raise RunDirError(f"--out {out}: holds a run of {saved['experiment']}; choose another folder")
    if out.is_dir() and any(out.iterdir()):
        raise RunDirError(f"--out {out}: not empty and not a run; choose a new or empty folder (nothing was changed)")
    return None


def new_run_dir(base: Path, name: str) -> Path:
    """Create and return `base/NAME-YYYYmmdd-HHMMSS-XXXXXX`: unique even for runs started together
    (the folder is created with `exist_ok=False`, and a clash draws a new random suffix)."""
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = base / f"{name}-{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            continue


def claim(out: Path, meta: dict[str, Any]) -> None:
    """Write `out/config.json`, failing with `RunDirError` if another run created it meanwhile.

    The file is written in full to a temporary name, then hard-linked into place: a link never
    replaces an existing file, and the config is never seen half-written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    fd, tmp_name = tempfile.mkstemp(prefix=".config.json.", suffix=".tmp", dir=out)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fchmod(fh.fileno(), file_mode(out / "config.json"))  # mkstemp's 0o600 would stay
            os.fsync(fh.fileno())
        try:
            os.link(tmp, out / "config.json")
        except FileExistsError:
            raise RunDirError(f"--out {out}: another run claimed this folder at the same time") from None
    finally:
        tmp.unlink(missing_ok=True)


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what a killed run left in `out`: temporary files of unfinished atomic writes (`.*.tmp`)
    and orphan or superseded checkpoints. Returns the removed paths."""
    removed = []
    for tmp in sorted(out.rglob(".*.tmp")):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed + prune_checkpoints(out / "checkpoints")
