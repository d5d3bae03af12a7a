"""Run reports: a self-contained `report.html` (figures embedded) rebuilt from a run folder, and the
headline table of a run's results (for the report and the terminal)."""

from hypernet.report.html import ReportError, build_report
from hypernet.report.table import Table, print_table

__all__ = ["ReportError", "Table", "build_report", "print_table"]
