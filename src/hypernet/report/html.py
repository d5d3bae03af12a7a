"""`report.html`: one self-contained page per run, rebuilt from the run directory's files
(`config.json`, `summary.json`, `figures/*.png`, `metrics.jsonl`)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from hypernet.train.atomic import write_text
from hypernet.train.metrics import read_metrics

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:0 .2em}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, (dict, list)):
        return f"<code>{html.escape(json.dumps(value))}</code>"
    return html.escape(str(value))


def _table(data: dict[str, Any]) -> str:
    """A dict of dicts becomes one row per key; a flat dict becomes key/value rows."""
    if data and all(isinstance(v, dict) for v in data.values()):
        cols: list[str] = []
        for v in data.values():
            cols += [c for c in v if c not in cols]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *cols])
        rows = "".join(
            "<tr><th>" + html.escape(k) + "</th>" + "".join(f"<td>{_fmt(v.get(c, ''))}</td>" for c in cols) + "</tr>"
            for k, v in data.items()
        )
        return f"<table><tr>{head}</tr>{rows}</table>"
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in data.items())
    return f"<table>{rows}</table>"


def build_report(run_dir: Path) -> Path:
    """(Re)write `run_dir/report.html` from the run's files; return its path."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = json.loads(config_path.read_text())
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    parts = [f"<h1>{html.escape(config.get('experiment', 'run'))}</h1>"]
    parts.append(f"<p>{html.escape(config.get('description', ''))}</p>")
    parts.append(f"<p>Command: <code>{html.escape(config.get('command', ''))}</code></p>")
    if not summary:
        parts.append("<p><b>No summary yet: the run has not finished.</b></p>")
    for key, value in summary.items():
        parts.append(f"<h2>{html.escape(key)}</h2>")
        parts.append(_table(value) if isinstance(value, dict) else f"<p>{_fmt(value)}</p>")
    for png in sorted((run_dir / "figures").glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(png.stem.replace('_', ' '))}</h2>")
        parts.append(f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">')
    parts.append("<h2>Configuration</h2>" + _table(config.get("config", {})))
    n = len(read_metrics(run_dir / "metrics.jsonl"))
    parts.append(f"<p>{n} metric records in <code>metrics.jsonl</code>.</p>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>hypernet report</title><style>{_STYLE}</style>"
    page += "</head><body>" + "\n".join(parts) + "</body></html>\n"
    out = run_dir / "report.html"
    write_text(out, page)
    return out
