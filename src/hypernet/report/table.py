"""A run's headline table: a few readable columns of its main numbers, for the terminal and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """`columns`: readable column names; `rows`: one list of cells per row; `note`: one line under it."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"Table {self.title!r}: a row has {len(row)} cells for {len(self.columns)} columns")

    def text_rows(self) -> list[list[str]]:
        return [[cell(v) for v in row] for row in self.rows]


def cell(value: Any) -> str:
    """A number as a person reads it: 4 significant digits kept (1.000, 0.9754, 12.21), integers with
    thousands separated; lists joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:#.4g}" if abs(value) < 1e3 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    return str(value)


def print_table(table: Table) -> None:
    """Print `table` on stdout: a rich table where rich is installed, aligned plain text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:  # the core without the cli extra
        rows = [table.columns, *table.text_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(table.columns))]
        print(table.title)
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if table.note:
            print(table.note)
        return
    rt = RichTable(title=table.title, caption=table.note or None, title_justify="left", caption_justify="left")
    for i, col in enumerate(table.columns):
        rt.add_column(col, justify="left" if i == 0 else "right")
    for row in table.text_rows():
        rt.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough that no column is cut
        console = Console(width=max(console.width, 160))
    console.print(rt)
