"""`metrics.jsonl`: one JSON record per line, appended as training goes, rewound on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypernet.train.atomic import write_text


class MetricsLog:
    """Appends records to `path`; `rewind(phase, step)` drops what a killed run wrote after a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def rewind(self, phase: str, step: int) -> None:
        """Keep every record up to the last one of `phase` at or before `step`; drop the rest."""
        records = self.records()
        for i, rec in enumerate(records):
            if rec.get("phase") == phase and int(rec.get("step", 0)) > step:
                records = records[:i]
                break
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a `metrics.jsonl` (a half-written last line, from a kill, is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
