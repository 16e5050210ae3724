"""The sections of a suite's variants ready for the template: the statistics' frames turned into
printed tables (key metrics with intervals and deltas, the paper-style comparison, efficiency,
every run's values, failures, provenance, packages) and the figures drawn."""

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from bench.config.suite import PaperTableConfig
from bench.report import compute, figures, paired, statistics
from bench.report.compute_section import compute_section
from bench.report.formatting import (
    DASH,
    cell_text,
    compute_label,
    curve_label,
    fmt_gib,
    fmt_interval,
    fmt_mean_half,
    fmt_percent,
    fmt_rate,
    fmt_ratio,
    fmt_sci,
    fmt_signed,
    fmt_value,
    format_column,
    reason_text,
    short_id,
    svg_markup,
)
from bench.report.layout import PDF_RUNS_PER_VARIANT, Cell, Table, printed_runs
from bench.report.spec import ReportSpec
from bench.report.suite_data import SuiteData, variant_order
from bench.store.queries import FINISHED

STDERR_COLUMN = "eval stderr (lm-eval)"
EXAMPLES_COLUMN = "Δ over examples (paired test)"
# The level at which a test's difference is called one (two-sided p below it).
ALPHA = 0.05
# What follows a metric scored on a proxy data set in a table's header.
PROXY_MARK = " (proxy)"
_PROVENANCE_FIELDS = ("commit", "device", "host", "python")


def variant_parts(spec: ReportSpec, data: SuiteData, tables: dict[str, Table],
                  summary: pd.DataFrame) -> dict[str, Any]:
    """The template's values for the suite's variants, around its printed `tables` and the
    main table's `summary` (`bench.report.tables.report_tables`)."""
    variants = variant_order(spec.variants, data, spec.references)
    spec = shown_references(spec, data)
    shared, per_run = provenance_tables(statistics.provenance_table(data, variants))
    comparison = tables.get("paper")
    main = tables["main"]
    runs = data.runs
    recorded = set(data.finals["metric"])
    shown = data.finals[data.finals["metric"].isin(spec.metrics)]
    return dict(
        variants=variants,
        n_finished=int((runs["state"] == FINISHED).sum()),
        n_other=int((runs["state"] != FINISHED).sum()),
        started=cell_text(runs["started"].dropna().min()),
        ended=cell_text(runs["ended"].dropna().max()),
        comparison=comparison,
        comparison_referenced=comparison is not None
        and any(row[0].cls == "paper" for row in comparison.rows),
        main=main,
        main_stderr=STDERR_COLUMN in main.columns,  # its legend only under such a column
        examples_column=EXAMPLES_COLUMN in main.columns,
        # deltas of seeds that all agree: their legend only where there is one
        main_flat=spec.baseline is not None and any(
            statistics.no_spread(low, high) for low, high in zip(
                summary["delta_low"], summary["delta_high"], strict=True)),
        undirected=[m for m in spec.metrics if spec.higher_is_better.get(m) is None],
        unrecorded=[m for m in spec.metrics if m not in recorded],
        undrawn=int((~compute.drawable(shown["value"])).sum()),
        drawn_limit=f"{compute.DRAWN_LIMIT:.0e}",
        efficiency=tables.get("efficiency"),
        ratios=ratios_section(spec, data, variants),
        per_seed=printed_runs(tables["per-seed"]),
        unfinished=printed_runs(format_unfinished_table(
            statistics.unfinished_table(data, variants))),
        shared_provenance=shared,
        per_run=printed_runs(per_run),
        pdf_runs=PDF_RUNS_PER_VARIANT,
        packages=package_lines(statistics.package_table(data)),
        curve_svg=svg_markup(figures.curve_figure(data, variants, spec.curve)),
        curve_name=curve_label(spec.curve),
        metric_svg=svg_markup(figures.metric_figure(data, variants, spec.metrics, summary)),
        eval_svg=svg_markup(figures.evaluation_curves_figure(data, variants)),
        ladder=compute_section(spec, data, variants),
        resamples=compute.RESAMPLES,
        meaningful=compute.MEANINGFUL,
        paired_resamples=f"{paired.RESAMPLES:,}",
    )


def shown_references(spec: ReportSpec, data: SuiteData) -> ReportSpec:
    """`spec` with the paper's numbers under the names the variants are shown by (a reference
    variant's marked)."""
    return replace(spec, reference={data.shown(k, spec.references): v
                                    for k, v in spec.reference.items()})


def main_table(
    spec: ReportSpec, variants: Sequence[str], summary: pd.DataFrame, consumed: pd.DataFrame
) -> Table:
    """One row per variant: each metric's seed mean and interval, eval stderr, paper, delta."""
    blocks = []  # per metric: which sub-columns carry anything
    for metric in spec.metrics:
        rows = summary.xs(metric, level="metric")
        blocks.append((metric, rows["stderr"].notna().any(), rows["reference"].notna().any(),
                       "example_test" in rows and rows["example_test"].notna().any()))
    groups: list[tuple[str, int]] = [("", 2)]
    columns = ["variant", "seeds"]
    for metric, has_stderr, has_reference, has_examples in blocks:
        sub = ["mean ± 95% CI (seeds)"]
        sub += [STDERR_COLUMN] if has_stderr else []
        sub += ["paper"] if has_reference else []
        sub += [f"Δ vs {spec.baseline} (95% CI, test)"] if spec.baseline else []
        sub += [EXAMPLES_COLUMN] if has_examples else []
        groups.append((metric_label(spec, metric), len(sub)))
        columns += sub
    flops, items, rate = statistics.consumed_metric_names(spec.item_unit)
    groups.append(("compute consumed (mean over seeds)", 3))
    columns += ["FLOPs", spec.item_unit, f"{spec.item_unit}/s"]
    best = {metric: best_of(summary.xs(metric, level="metric")["mean"],
                            spec.higher_is_better.get(metric)) for metric in spec.metrics}
    rows = []
    for variant in variants:
        row = [Cell(variant, "name"), Cell(str(int(consumed.loc[variant, "n"])), "num")]
        for metric, has_stderr, has_reference, has_examples in blocks:
            est = summary.loc[(variant, metric)]
            row.append(Cell(fmt_interval(est["mean"], est["low"], est["high"], int(est["n"])),
                            "num best" if variant in best[metric] else "num"))
            if has_stderr:
                row.append(Cell(fmt_value(est["stderr"]), "num"))
            if has_reference:
                row.append(Cell(fmt_value(est["reference"]), "num paper"))
            if spec.baseline:
                row.append(_delta_cell(variant, spec, metric, est))
            if has_examples:
                row.append(_example_cell(variant, spec, metric, est))
        row.append(Cell(fmt_sci(consumed.loc[variant, flops]), "num"))
        row.append(Cell(fmt_sci(consumed.loc[variant, items]), "num"))
        row.append(Cell(fmt_rate(consumed.loc[variant, rate]), "num"))
        rows.append(row)
    return Table(columns=columns, rows=rows, groups=groups, keep=2)


def brief_table(spec: ReportSpec, variants: Sequence[str], summary: pd.DataFrame,
                seeds: pd.Series) -> Table:
    """One row per variant: finished seeds and each metric's mean ± 95% CI, the best bold (what
    `bench run` prints at its end)."""
    columns = ["variant", "seeds", *[metric_label(spec, m) for m in spec.metrics]]
    best = {metric: best_of(summary.xs(metric, level="metric")["mean"],
                            spec.higher_is_better.get(metric)) for metric in spec.metrics}
    rows = []
    for variant in variants:
        cells = [Cell(variant, "name"), Cell(str(int(seeds[variant])), "num")]
        for metric in spec.metrics:
            est = summary.loc[(variant, metric)]
            cells.append(Cell(fmt_interval(est["mean"], est["low"], est["high"], int(est["n"])),
                              "num best" if variant in best[metric] else "num"))
        rows.append(cells)
    return Table(columns=columns, rows=rows)


def comparison_table(spec: ReportSpec, config: PaperTableConfig, variants: Sequence[str],
                     frame: pd.DataFrame) -> Table:
    """The paper-style table: `mean ± half` per column and `×ratio` per ratio metric, each
    variant followed by its reference row where the suite gives any of these numbers."""
    scale = config.scale

    def label(metric: str) -> str:
        return config.labels.get(metric, metric) + (PROXY_MARK if spec.is_proxy(metric) else "")

    columns = ["variant", *map(label, config.columns), *[f"{label(m)} ×" for m in config.ratios]]
    best = {m: best_of(frame[(m, "mean")], spec.higher_is_better.get(m)) for m in config.columns}
    rows = []
    for variant in variants:
        rec = frame.loc[variant]
        rows.append([
            Cell(variant, "name"),
            *[Cell(fmt_mean_half(rec[(m, "mean")] * scale, rec[(m, "half")] * scale),
                   "num best" if variant in best[m] else "num")
              for m in config.columns],
            *[Cell(fmt_ratio(rec[(m, "ratio")]), "num") for m in config.ratios],
        ])
        paper = [rec[(m, "reference")] * scale for m in config.columns]
        paper_ratios = [rec[(m, "reference_ratio")] for m in config.ratios]
        if not all(math.isnan(x) for x in (*paper, *paper_ratios)):
            rows.append([
                Cell(f"{variant} (paper)", "paper"),
                *[Cell(fmt_value(x), "num paper") for x in paper],
                *[Cell(fmt_ratio(x), "num paper") for x in paper_ratios],
            ])
    return Table(columns=columns, rows=rows)


def format_efficiency_table(frame: pd.DataFrame, unit: str) -> Table:
    """One row per variant: the efficiency metrics some run recorded, each with its unit."""
    flops_per_s, mfu, rate, memory = statistics.efficiency_metric_names(unit)
    formats = {flops_per_s: ("FLOP/s", fmt_sci), mfu: ("MFU", fmt_percent),
               rate: (f"{unit}/s", fmt_rate), memory: ("peak memory", fmt_gib)}
    shown = [m for m in formats if m in frame.columns]
    rows = [[Cell(str(variant), "name"),
             *[Cell(formats[m][1](frame.loc[variant, m]), "num") for m in shown]]
            for variant in frame.index]
    return Table(columns=["variant", *[formats[m][0] for m in shown]], rows=rows)


def format_compute_table(frame: pd.DataFrame, unit: str) -> Table:
    """One row per variant: finished seeds and the compute they consumed, means over them."""
    flops, items, rate = statistics.consumed_metric_names(unit)
    rows = [[Cell(str(variant), "name"), Cell(str(int(frame.loc[variant, "n"])), "num"),
             Cell(fmt_sci(frame.loc[variant, flops]), "num"),
             Cell(fmt_sci(frame.loc[variant, items]), "num"),
             Cell(fmt_rate(frame.loc[variant, rate]), "num")]
            for variant in frame.index]
    return Table(columns=["variant", "seeds", "FLOPs", unit, f"{unit}/s"], rows=rows)


def format_per_seed_table(frame: pd.DataFrame) -> Table:
    """Every finished run's values, formatted like the main table."""
    keys = ("run_id", "variant", "seed", "budget")
    metric_columns = [c for c in frame.columns if c not in keys]
    budget = ["budget"] if "budget" in frame else []
    columns = ["variant", "seed", "run", *budget, *[compute_label(c) for c in metric_columns]]
    rows = [
        [
            Cell(str(rec["variant"]), "name"),
            Cell(str(rec["seed"]), "num"),
            Cell(short_id(rec["run_id"]), "mono"),
            *[Cell(fmt_sci(rec[c]), "num") for c in budget],
            *[Cell(format_column(c, rec[c]), "num") for c in metric_columns],
        ]
        for rec in frame.to_dict("records")
    ]
    return Table(columns=columns, rows=rows, keep=3 + len(budget))


def format_unfinished_table(frame: pd.DataFrame) -> Table:
    """Failed and unfinished runs with their reason (cut short: `reason_text`, pointing to the
    run's folder, `path`)."""
    columns = ["variant", "seed", "run", "state", "reason", "started", "ended"]
    rows = [
        [
            Cell(str(rec["variant"]), "name"),
            Cell(str(rec["seed"]), "num"),
            Cell(short_id(rec["run_id"]), "mono"),
            Cell(str(rec["state"]), "state"),
            Cell(reason_text(rec["reason"], rec["path"]), "reason"),
            Cell(cell_text(rec["started"])),
            Cell(cell_text(rec["ended"])),
        ]
        for rec in frame.to_dict("records")
    ]
    return Table(columns=columns, rows=rows, keep=3)


def provenance_tables(frame: pd.DataFrame) -> tuple[list[tuple[str, str]], Table]:
    """Fields every run shares are listed once; only the fields that differ get columns."""
    shared, varying = [], []
    for name in _PROVENANCE_FIELDS:
        # A run that recorded no provenance (still running, crashed early) does not split a field.
        values = {str(v) for v in frame[name] if pd.notna(v)}
        if len(values) == 1:
            shared.append((name, values.pop()))
        elif values:
            varying.append(name)
    columns = ["variant", "seed", "run", "state", *varying, "started", "ended"]
    rows = [
        [
            Cell(str(rec["variant"]), "name"),
            Cell(str(rec["seed"]), "num"),
            Cell(short_id(rec["run_id"]), "mono"),
            Cell(str(rec["state"])),
            *[Cell(cell_text(rec[name]), "mono" if name == "commit" else "") for name in varying],
            Cell(cell_text(rec["started"])),
            Cell(cell_text(rec["ended"])),
        ]
        for rec in frame.to_dict("records")
    ]
    return shared, Table(columns=columns, rows=rows, keep=3)


def package_lines(frame: pd.DataFrame) -> list[Cell]:
    """`name version` per package; where runs differ, every version with its number of runs."""
    lines = []
    for rec in frame.to_dict("records"):
        versions: dict[str, int] = rec["versions"]
        if len(versions) == 1:
            lines.append(Cell(f"{rec['package']} {next(iter(versions))}"))
        else:
            listed = ", ".join(f"{v} ({n} run{'' if n == 1 else 's'})" for v, n in versions.items())
            lines.append(Cell(f"{rec['package']} {listed}", "differs"))
    return lines


def ratios_section(spec: ReportSpec, data: SuiteData, variants: Sequence[str]) -> Table | None:
    """Throughput and latency of each variant over the baseline's, beside the paper's ratios;
    None without a baseline or without any such record."""
    ratios = None if spec.baseline is None else compute.efficiency_ratios(
        data, variants, spec.baseline, spec.metrics, spec.item_unit, spec.reference)
    return None if ratios is None else ratios_table(ratios)


def ratios_table(frame: pd.DataFrame) -> Table:
    """Per variant: each efficiency ratio to the baseline, beside the paper's where given."""
    metrics = list(dict.fromkeys(frame.columns.get_level_values("metric")))
    columns = ["variant"]
    for metric in metrics:
        columns += [f"{compute_label(metric)} ×", "per-seed range", "paper ×"]
    rows = [[Cell(str(variant), "name"),
             *[cell for m in metrics for cell in (
                 Cell(fmt_ratio(frame.loc[variant, (m, "ratio")]), "num"),
                 Cell(_range(frame.loc[variant, (m, "ratio_min")],
                             frame.loc[variant, (m, "ratio_max")]), "num"),
                 Cell(fmt_ratio(frame.loc[variant, (m, "reference_ratio")]), "num paper"))]]
            for variant in frame.index]
    return Table(columns=columns, rows=rows)


def _range(low: float, high: float) -> str:
    """A ratio's per-seed range: `×0.38–×0.42`; the one value where the seeds agree."""
    if math.isnan(low):
        return DASH
    return fmt_ratio(low) if low == high else f"{fmt_ratio(low)}–{fmt_ratio(high)}"


def best_of(means: pd.Series, higher: bool | None) -> set[str]:
    """The variants (the index of `means`) whose mean is the best by the metric's direction,
    every one of them where several tie; none without a direction or a finite mean."""
    finite = means[means.map(lambda x: math.isfinite(x))]
    if higher is None or finite.empty:
        return set()
    top = finite.max() if higher else finite.min()
    return set(finite.index[finite == top])


def metric_label(spec: ReportSpec, metric: str) -> str:
    """A metric as a table's header names it: marked where a proxy data set scores it."""
    return metric + (PROXY_MARK if spec.is_proxy(metric) else "")


def _delta_cell(variant: str, spec: ReportSpec, metric: str, est: pd.Series) -> Cell:
    if variant == spec.baseline:
        return Cell("baseline", "baseline")
    delta, low, high = est["delta"], est["delta_low"], est["delta_high"]
    if math.isnan(delta):
        return Cell(DASH, "num")
    text = fmt_signed(delta)
    if statistics.no_spread(low, high):  # every seed gave the same difference: no interval,
        text += f" ({est['delta_test']}; no spread, p undefined)"  # and no p (0 over 0)
        return Cell(text, "num " + _direction(spec, metric, delta, clear=False))
    if delta == 0:
        return Cell(f"0 (tie; {est['delta_test']})", "num tie")
    if math.isnan(low):  # no interval (a seed too few, a value not finite): not tested
        return Cell(f"{text} ({est['delta_test']})", "num")
    text += f" ± {fmt_value((high - low) / 2)} ({est['delta_test']}" + (
        f", p={est['delta_p']:.2g}" if not math.isnan(est["delta_p"]) else "")
    if not (low > 0 or high < 0):  # the interval holds 0: no difference found
        return Cell(text + ", n.s.)", "num ns")
    return Cell(text + ")", "num " + _direction(spec, metric, delta, clear=True))


def _direction(spec: ReportSpec, metric: str, delta: float, clear: bool) -> str:
    """A difference's classes: better or worse by the metric's direction, `clear` where a
    test found it (none without a direction)."""
    higher = spec.higher_is_better.get(metric)
    if higher is None:
        return ""
    return ("better" if (delta > 0) == higher else "worse") + (" clear" if clear else "")


def _example_cell(variant: str, spec: ReportSpec, metric: str, est: pd.Series) -> Cell:
    """The paired test over examples (`paired.py`): the difference, its interval (bootstrap)
    or discordant pairs (McNemar), p, and how many seeds and examples were paired."""
    if variant == spec.baseline:
        return Cell("baseline", "baseline")
    if not isinstance(est.get("example_test"), str):
        return Cell(DASH, "num")
    diff, p = est["example_diff"], est["example_p"]
    paired = f"{int(est['example_seeds'])} seed{'s' * (int(est['example_seeds']) != 1)} × " \
             f"{int(est['examples']):,}"
    if est["example_test"] == "McNemar":
        detail = (f"McNemar, {int(est['discordant_better'])} vs "
                  f"{int(est['discordant_worse'])} discordant")
    else:
        detail = est["example_test"]
        if not math.isnan(est["example_low"]):
            detail = (f"[{fmt_value(est['example_low'])}, {fmt_value(est['example_high'])}] "
                      f"{detail}")
    significant = not math.isnan(p) and p < ALPHA
    text = (f"{'0 (tie)' if diff == 0 else fmt_signed(diff)} ({detail}, "
            f"{'p undefined' if math.isnan(p) else f'p={p:.2g}'}"
            f"{'' if significant else ', n.s.'}; {paired})")
    if not significant or diff == 0:
        return Cell(text, "num ns")
    return Cell(text, "num " + _direction(spec, metric, diff, clear=True))
