"""The study report: Typst source generated from a run directory, compiled to ``report.pdf``."""

from __future__ import annotations

from .build import build_report, is_report, report_source, run_date
from .config import ReportConfig

__all__ = ["ReportConfig", "build_report", "is_report", "report_source", "run_date"]
