"""The committed results (`docs/results/*.json`) are standard JSON, and each experiment's table can be
rebuilt from them as `hypernet report` rebuilds it from a run's summary.json (where a non-finite
number is stored as null)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hypernet.cli import _experiments

RESULTS = sorted((Path(__file__).resolve().parents[1] / "docs" / "results").glob("*.json"))


def _strict(text: str) -> Any:
    def refuse(name: str) -> float:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_are_standard_json_and_their_tables_rebuild(path: Path) -> None:
    data = _strict(path.read_text(encoding="utf-8"))
    exp = _experiments().get(data.get("experiment", path.stem))
    if exp is None or exp.headline is None:
        pytest.skip(f"{path.name}: no experiment table to rebuild")
    summary = data.get("summary", data)  # results.json wraps the summary; some files are the summary
    table = exp.headline(summary)
    assert table.rows, path.name
    if "headline" in data:  # the table the run itself stored: the same cells, read back from JSON
        stored = data["headline"]
        # as a multiset of rows: files written before write_json kept key order have sorted keys,
        # which reorders the rows rebuilt from them (test_cli checks the order on a fresh run)
        rebuilt = json.loads(json.dumps(table.rows))
        assert sorted(map(json.dumps, rebuilt)) == sorted(map(json.dumps, stored["rows"])), path.name
        assert table.columns == stored["columns"], path.name
