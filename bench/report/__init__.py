"""Reports: a pure function of the results index, written as self-contained HTML and as PDF.

May import: the ground floor, `bench.util`, the config (a suite's report settings), the
evaluators' registry (which evaluations score a proxy), the store (the index, read through
`bench.store.queries`) and the execution (the one rule for a run's shown state, a study's
storage). Not the families or the command line."""

from bench.report.render import render_report
from bench.report.spec import ReportSpec, spec_for

__all__ = ["ReportSpec", "render_report", "spec_for"]
