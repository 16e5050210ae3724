"""Reports: a pure function of the results index, written as self-contained HTML and as PDF."""

from bench.report.render import ReportSpec, render_report

__all__ = ["ReportSpec", "render_report"]
