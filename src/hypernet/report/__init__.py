"""Run reports: a self-contained `report.html` (figures embedded) rebuilt from a run directory."""

from hypernet.report.html import build_report

__all__ = ["build_report"]
