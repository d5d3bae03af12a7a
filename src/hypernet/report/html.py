"""`report.html`: one self-contained page per run, rebuilt from the run folder's files
(`config.json`, `summary.json`, `run.json`, `figures/*.png`, `metrics.jsonl`).

The page: a title and what the experiment shows; what was run (command, settings, seed, times,
versions); the headline table with readable column names; the figures with captions; and the raw
JSON, collapsed, at the end.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypernet.report.table import Table, cell
from hypernet.train.atomic import write_text
from hypernet.train.metrics import read_metrics

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em}.lead{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.5em 0 .4em}td,th{border:1px solid #ccc;padding:.3em .7em}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{font-weight:normal;color:#444}caption{caption-side:bottom;text-align:left;color:#555;padding-top:.3em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#444;font-size:.95em}
code,pre{background:#f4f4f4;padding:0 .2em}pre{padding:.6em;overflow-x:auto;font-size:.85em}
details{margin:.6em 0}summary{cursor:pointer;color:#225}
"""


class ReportError(ValueError):
    """A run file the report needs is unreadable (named in the message)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not readable JSON ({exc})") from exc


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table_html(table: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td{' class=num' if _is_num(v) else ''}>{_esc(cell(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    note = f"<caption>{_esc(table.note)}</caption>" if table.note else ""
    return f"<h2>{_esc(table.title)}</h2><table>{note}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _what_was_run(config: dict[str, Any], run: dict[str, Any]) -> str:
    settings = config.get("config", {})
    versions = config.get("versions", {})
    rows = [
        ("command", f"<code>{_esc(config.get('command', ''))}</code>"),
        ("seed", _esc(config.get("seed", "")) + " (every random draw of the run derives from it)"),
        ("quick mode", "yes" if config.get("quick") else "no"),
        ("device", _esc(config.get("device", ""))),
        ("started", _esc(config.get("started", "unknown"))),
        ("finished", _esc(run.get("finished", "not yet")) + (" (resumed)" if run.get("resumed") else "")),
    ]
    if "seconds" in run:
        rows.append(("time of the last session", f"{run['seconds']:.1f} s"))
    if versions:
        rows.append(("versions", _esc(", ".join(f"{k} {v}" for k, v in versions.items()))))
    setting_rows = [(f"<code>{_esc(k)}</code>", _esc(_setting(v))) for k, v in settings.items()]
    return "<h2>What was run</h2>" + _kv(rows) + "<h3>Settings</h3>" + _kv(setting_rows)


def _setting(value: Any) -> str:
    """A setting as it was given (`0.002`, `50, 200`), not rounded like a result."""
    if isinstance(value, list):
        return ", ".join(_setting(v) for v in value) if value else "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return '""' if value == "" else str(value)


def _raw(name: str, data: Any) -> str:
    text = json.dumps(data, indent=2, sort_keys=True)
    return f"<details><summary>Raw <code>{_esc(name)}</code></summary><pre>{_esc(text)}</pre></details>"


def build_report(
    run_dir: Path,
    headline: Callable[[dict[str, Any]], Table] | None = None,
    captions: dict[str, str] | None = None,
) -> Path:
    """(Re)write `run_dir/report.html` from the run's files; return its path.

    `headline(summary)` gives the results table, `captions` one sentence per figure (by file stem);
    both come from the experiment's registration.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise ReportError(f"{run_dir} is not a run directory (no config.json)")
    config = _read_json(config_path)
    summary_path, run_path = run_dir / "summary.json", run_dir / "run.json"
    summary = _read_json(summary_path) if summary_path.exists() else {}
    run = _read_json(run_path) if run_path.exists() else {}
    name = config.get("experiment", "run")
    parts = [f"<h1>{_esc(name)}</h1>", f"<p class=lead>{_esc(config.get('description', ''))}</p>"]
    if not summary:
        parts.append("<p><b>No results yet: the run has not finished.</b></p>")
    elif headline is not None:
        parts.append(table_html(headline(summary)))
    parts.append(_what_was_run(config, run))
    figures = sorted((run_dir / "figures").glob("*.png"))
    if figures:
        parts.append("<h2>Figures</h2>")
    for i, png in enumerate(figures, start=1):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = (captions or {}).get(png.stem, png.stem.replace("_", " "))
        parts.append(
            f'<figure><img alt="{_esc(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>Figure {i}.</b> {_esc(caption)}</figcaption></figure>"
        )
    n = len(read_metrics(run_dir / "metrics.jsonl"))
    parts.append(f"<h2>Raw data</h2><p>{n} training records in <code>metrics.jsonl</code>.</p>")
    parts += [_raw("summary.json", summary), _raw("config.json", config)]
    title = f"hypernet: {name}"
    page = f"<!doctype html><html lang=en><head><meta charset='utf-8'><title>{_esc(title)}</title>"
    page += f"<style>{_STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    out = run_dir / "report.html"
    write_text(out, page)
    return out
