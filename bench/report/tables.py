"""The report's tables as a paper or a notebook takes them (`bench export`, and the files the
HTML report links): each table's numbers as statistics computes them (for CSV and JSON), its
cells as the report prints them (for LaTeX and Markdown), and a caption that names the suite,
the budget, the seeds and the test, so that a table pasted elsewhere still says what it is."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.errors import UserError
from bench.report import paired, sections, statistics
from bench.report.layout import Table
from bench.report.spec import ReportSpec
from bench.report.suite_data import SuiteData, variant_order
from bench.store.queries import FINISHED

# Every table `bench export --table` names, in the order the report shows them.
TABLE_NAMES = ("main", "brief", "paper", "per-seed", "compute", "efficiency")


@dataclass(frozen=True)
class ReportTable:
    """One table of a report: `numbers` unformatted (one row per variant, or per variant and
    metric), `shown` as the report prints it, `caption` saying what the numbers are."""

    name: str
    numbers: pd.DataFrame
    shown: Table
    caption: str


def report_tables(spec: ReportSpec, data: SuiteData) -> dict[str, ReportTable]:
    """Every table the suite's report shows, by name (`paper` only where the suite asks for a
    paper's table, `efficiency` only where a run recorded FLOP/s, MFU or peak memory)."""
    variants = variant_order(spec.variants, data, spec.references)
    spec = sections.shown_references(spec, data)
    where = _where(spec, data)
    summary = statistics.summary_table(data, variants, spec.metrics, spec.baseline,
                                       spec.reference).join(
        paired.example_tests(data, variants, spec.metrics, spec.baseline))
    consumed = statistics.compute_table(data, variants, spec.item_unit)
    tables = {"main": ReportTable(
        "main", summary, sections.main_table(spec, variants, summary, consumed),
        f"{spec.title}. {where} {_mean_text('Mean')}{_delta_text(spec, summary)}"
        f"{_best_text(spec, spec.metrics)}{_proxy_text(spec, spec.metrics)}")}
    tables["brief"] = brief_table(spec, data)
    if spec.table is not None:
        frame = statistics.paper_table(data, variants, spec.table.columns, spec.table.ratios,
                                       spec.baseline, spec.reference)
        scale = f", ×{spec.table.scale:g} for display" if spec.table.scale != 1 else ""
        ratios = (f" Columns marked ×: the variant's mean over {spec.baseline}'s."
                  if spec.table.ratios else "")
        tables["paper"] = ReportTable(
            "paper", frame, sections.comparison_table(spec, spec.table, variants, frame),
            f"{spec.table.title or spec.title}. {where} {_mean_text('Mean')}{scale}.{ratios}"
            f"{_paper_text(spec)}{_best_text(spec, spec.table.columns)}"
            f"{_proxy_text(spec, spec.table.columns)}")
    per_seed = statistics.per_seed_table(data, variants, spec.metrics, spec.item_unit)
    tables["per-seed"] = ReportTable(
        "per-seed", per_seed, sections.format_per_seed_table(per_seed),
        f"Every finished run of suite {spec.suite}, one row per run and seed (a ladder's lower "
        f"rungs included).{_proxy_text(spec, spec.metrics)}")
    tables["compute"] = ReportTable(
        "compute", consumed, sections.format_compute_table(consumed, spec.item_unit),
        f"Compute consumed in suite {spec.suite}: training FLOPs and {spec.item_unit} as each "
        f"run measured them, and training {spec.item_unit} per second, means over finished "
        f"seeds. {where}")
    efficiency = statistics.efficiency_table(data, variants, spec.item_unit)
    if efficiency is not None:
        tables["efficiency"] = ReportTable(
            "efficiency", efficiency, sections.format_efficiency_table(efficiency,
                                                                       spec.item_unit),
            f"Training efficiency in suite {spec.suite}: model FLOP/s over every device, MFU "
            "against the devices' dense peak (where known), throughput and peak device memory, "
            f"means over finished seeds. {where}")
    return tables


def brief_table(spec: ReportSpec, data: SuiteData) -> ReportTable:
    """The key metrics by variant, means over finished seeds at each variant's compared budget,
    as `bench run` prints them at its end."""
    variants = variant_order(spec.variants, data, spec.references)
    summary = statistics.summary_table(data, variants, spec.metrics, None, {})
    seeds = statistics.compute_table(data, variants, spec.item_unit)["n"]
    return ReportTable("brief", summary, sections.brief_table(spec, variants, summary, seeds),
                       f"{_where(spec, data)} {_mean_text('Mean')}.{_best_text(spec, spec.metrics)}"
                       f"{_proxy_text(spec, spec.metrics)}")


def chosen_table(tables: dict[str, ReportTable], name: str, spec: ReportSpec) -> ReportTable:
    """The table `name` of a report, or a UserError saying why the report has none."""
    if name in tables:
        return tables[name]
    why = {"paper": "it has no report.table block (a paper's table to reproduce)",
           "efficiency": "none of its finished runs recorded FLOP/s, MFU or peak memory"}
    raise UserError(f"--table {name}: suite {spec.suite!r} has no such table: "
                    f"{why.get(name, 'not a table a report shows')}; its tables: "
                    f"{', '.join(tables)}")


def _where(spec: ReportSpec, data: SuiteData) -> str:
    """Suite, budget and seeds of the compared runs, as one sentence."""
    compared = data.runs[(data.runs["state"] == FINISHED) & data.runs["compared"]]
    budgets = {
        variant: _budget_text(rows["unit"].iloc[0], float(rows["budget"].iloc[0]))
        for variant, rows in compared.groupby("variant", sort=False)
        if rows["unit"].iloc[0] is not None and not math.isnan(rows["budget"].iloc[0])}
    if len(set(budgets.values())) == 1:
        budget = f", budget {next(iter(budgets.values()))} per run"
    else:  # none where only reference checkpoints (which train nothing) finished
        budget = "".join(f", {v} {b}" for v, b in budgets.items())
    ladder = " (each variant at its largest budget)" if statistics.has_ladder(data) else ""
    seeds = sorted({int(s) for s in compared["seed"]})
    return (f"Suite {spec.suite}{budget}{ladder}, seed{'s' * (len(seeds) != 1)} "
            f"{', '.join(map(str, seeds))}.")


def _budget_text(unit: str, amount: float) -> str:
    return f"{amount:.4g} {'FLOPs' if unit == 'flops' else unit}"


def _mean_text(lead: str) -> str:
    return (f"{lead} over finished seeds ± half-width of its 95% Student-t interval "
            "(n−1 degrees of freedom; one seed: the value alone)")


def _delta_text(spec: ReportSpec, summary: pd.DataFrame) -> str:
    if spec.baseline is None:
        return "."
    tests = sorted(set(summary["delta_test"].dropna()))
    named = " or ".join(f"{t} t-test" for t in tests) or "t-test"
    text = (f"; Δ: difference from {spec.baseline} ± half-width of its 95% interval, "
            f"two-sided p of the {named} over seeds; n.s.: p ≥ 0.05.")
    if "example_test" in summary and summary["example_test"].notna().any():
        text += (" Δ over examples: each seed's run paired with the baseline's on the same "
                 "examples, McNemar's exact test for an accuracy (discordant examples, the "
                 "variant's first, summed over seeds) or a paired bootstrap over examples "
                 f"({paired.RESAMPLES:,} resamples, 95% interval).")
    return text


def _best_text(spec: ReportSpec, metrics: Sequence[str]) -> str:
    directed = [m for m in metrics if spec.higher_is_better.get(m) is not None]
    return " Bold: the best mean of its column." if directed else ""


def _proxy_text(spec: ReportSpec, metrics: Sequence[str]) -> str:
    if not any(spec.is_proxy(m) for m in metrics):
        return ""
    return (f" {sections.PROXY_MARK.strip()}: scored on a proxy data set built from freely "
            "available text, not on the benchmark itself.")


def _paper_text(spec: ReportSpec) -> str:
    return (f" Rows marked (paper): the numbers of {spec.reference_source or 'the reference'}."
            if spec.reference else "")
