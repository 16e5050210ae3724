"""The section of a suite trained on a ladder of budgets, ready for the template: per metric,
its figure against compute, the fits and the compute each variant needs to match the baseline
(`compute` fits and resamples them)."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from bench.report import compute, figures, statistics
from bench.report.formatting import DASH, fmt_ratio, fmt_sci, fmt_value, svg_markup
from bench.report.layout import Cell, Table
from bench.report.spec import ReportSpec
from bench.report.suite_data import SuiteData


@dataclass(frozen=True)
class ComputePanel:
    """One metric against compute: its figure, its fits and its compute-to-match table (None
    without a baseline, or for a metric with no better direction: `unmatched` then says so)."""

    metric: str
    svg: Markup | None
    fits: Table
    match: Table | None
    proxy: bool  # scored on a proxy data set, not the benchmark
    unmatched: bool = False  # a baseline, but no direction to match it in
    left_out: int = 0  # finished runs of the metric whose value or compute is not drawable


@dataclass(frozen=True)
class ComputeSection:
    """The metric-against-compute section of a suite trained on a ladder of budgets; `units`
    lists the budget units when the variants' differ (then nothing shares an axis)."""

    unit: str
    units: list[str]
    panels: list[ComputePanel]


def compute_section(spec: ReportSpec, data: SuiteData, variants: Sequence[str]
                    ) -> ComputeSection | None:
    """The section's figures and tables; None when no variant finished more than one budget."""
    if not statistics.has_ladder(data):
        return None
    units = compute.ladder_units(data)
    if len(units) != 1:
        return ComputeSection("", units, [])
    metrics = spec.compute_metrics or compute.default_compute_metrics(spec.metrics)
    return ComputeSection(
        unit=units[0], units=units,
        panels=[compute_panel(spec, data, variants, m, units[0]) for m in metrics])


def compute_panel(spec: ReportSpec, data: SuiteData, variants: Sequence[str],
                  metric: str, unit: str) -> ComputePanel:
    """`metric` against compute: figure, fits and, against the baseline, compute to match."""
    points = compute.ladder_points(data, metric)
    higher = spec.higher_is_better.get(metric)
    fits = compute.fit_variants(points, variants, higher)
    goal = (math.nan if spec.baseline is None
            else compute.target(compute.rung_grid(points, spec.baseline)))
    match = None
    if spec.baseline is not None and higher is not None:
        matches = compute.compute_to_match(points, variants, spec.baseline, higher)
        match = match_table(matches, spec, metric, unit) if matches else None
    proxy = spec.is_proxy(metric)
    finals = data.finals[data.finals["metric"] == metric]
    scored = finals[finals["variant"].isin(data.references.values())]  # trained nothing here
    levels = scored.groupby("variant")["value"].mean().to_dict()
    svg = figures.compute_figure(points, variants, metric, unit, fits, goal, spec.baseline, proxy,
                                 levels)
    recorded = int((data.ladder["metric"] == metric).sum())
    return ComputePanel(metric, svg_markup(svg), fits_table(fits), match, proxy,
                        unmatched=spec.baseline is not None and higher is None,
                        left_out=recorded - len(points))


def fits_table(fits: dict[str, compute.Fit]) -> Table:
    """Per fitted variant: the form, why, its points, the RMS residual and the parameters."""
    rows = []
    for variant, fit in fits.items():
        p = fit.params
        params = (f"a = {fmt_value(p['a'])}, b = {fmt_value(p['b'])} at {fmt_sci(p['c_ref'])}, "
                  f"c = {p['c']:.3g}" if fit.form == compute.POWER_LAW else
                  f"α = {fmt_value(p['alpha'])}, β = {fmt_value(p['beta'])} per decade")
        rms = math.sqrt(float((fit.residuals ** 2).mean()))
        rows.append([Cell(variant, "name"), Cell(fit.form), Cell(fit.reason),
                     Cell(str(fit.residuals.size), "num"),
                     Cell(fmt_value(rms), "num"), Cell(params)])
    return Table(columns=["variant", "fit", "chosen by", "points", "RMS residual", "parameters"],
                 rows=rows)


def match_table(matches: dict[str, compute.Match], spec: ReportSpec, metric: str,
                unit: str) -> Table:
    """Per variant: the compute to match the baseline with its 95% bootstrap interval, the
    ratio likewise, the share of resamples that never match, and the paper's claim."""
    tail = (1 - compute.LEVEL) / 2
    rows = []
    for variant, m in matches.items():
        claim = compute.claimed_ratio(spec.reference, variant, metric)
        if m.kind == compute.BASELINE:
            cells = [Cell(fmt_sci(m.compute), "num"), Cell(DASH, "num"),
                     Cell("×1 (baseline)", "baseline"), Cell(DASH, "num"), Cell(DASH, "num"),
                     Cell(DASH)]
        else:
            bound = "≤ " if m.kind == compute.BOUND else ""
            low_bound = "≤ " if m.bounded > tail else ""
            tie = " (tie)" if m.tie else ""
            cells = [
                Cell(compute.NOT_REACHED if math.isnan(m.compute)
                     else bound + fmt_sci(m.compute) + tie, "num"),
                _interval_cell(m, _interval(low_bound + _reached(m.compute_low, math.inf, fmt_sci),
                                            _reached(m.compute_high, math.inf, fmt_sci))),
                Cell(compute.NOT_REACHED if math.isnan(m.ratio)
                     else bound.replace("≤", "≥") + fmt_ratio(m.ratio) + tie, "num"),
                _interval_cell(m, _interval(_reached(m.ratio_low, 0.0, fmt_ratio),
                                            low_bound.replace("≤", "≥")
                                            + _reached(m.ratio_high, 0.0, fmt_ratio))),
                Cell(f"{m.not_reached:.1%}", "num"),
                Cell(m.resampling),
            ]
        rows.append([Cell(variant, "name"), *cells, Cell(fmt_ratio(claim), "num paper")])
    return Table(columns=["variant", f"{unit} to match", "95% CI", "ratio", "95% CI (ratio)",
                          "resamples not reaching", "seeds resampled", "paper"], rows=rows)


def _interval_cell(m: compute.Match, text: str) -> Cell:
    """A bootstrap interval, or where the seeds allow too few distinct resamples to give one,
    how many they allow (an interval no resample reaches is said so either way)."""
    if m.meaningful or text == compute.NOT_REACHED:
        return Cell(text, "num")
    return Cell(f"not meaningful ({m.distinct} resamples)", "num ns")


def _reached(x: float, never: float, fmt: Callable[[float], str]) -> str:
    """An interval end, or 'not reached' where it stands for resamples that never match."""
    return compute.NOT_REACHED if x == never else fmt(x)


def _interval(low: str, high: str) -> str:
    """An interval's two ends; one 'not reached' when neither end is reached."""
    return compute.NOT_REACHED if low == high == compute.NOT_REACHED else f"[{low}, {high}]"
