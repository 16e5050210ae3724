"""Render one suite's report: index (and study) -> tables and figures -> HTML (inline SVG) -> PDF.

The report is a pure function of the results index, the suite's study (when it has a sweep) and
the suite's report settings: it carries no render time and fetches nothing, so rendering twice
gives the same files. A suite with a sweep reports its study even before any of its own variants
has a finished run.
"""

import hashlib
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import weasyprint
from markupsafe import Markup
from optuna.trial import FrozenTrial

from bench.config.suite import PaperTableConfig
from bench.errors import UserError
from bench.report import compute, figures, tables
from bench.report import study as study_mod
from bench.report.study import SweepData, SweepSource
from bench.util.atomic import remove_stale_temporaries

DASH = "—"
STDERR_COLUMN = "eval stderr (lm-eval)"
# Table columns beyond which the PDF is laid out on landscape pages.
WIDE_COLUMNS = 10
# Rows per variant that the PDF prints of a per-run table (values, failures, provenance): the HTML
# lists every run, but a printed store of thousands of runs would be thousands of pages.
PDF_RUNS_PER_VARIANT = 25
# Width a table may take, in points: A4 less the 11 mm side margins of the template's @page;
# in landscape the body's max-width (60rem = 720 pt) is the narrower bound.
_MM = 72 / 25.4
CONTENT_WIDTH_PT = {"portrait": (210 - 22) * _MM, "landscape": min((297 - 22) * _MM, 720.0)}
# Upper bounds on the template's table text: 7.5 pt condensed sans, bold headers; per cell
# 3 pt padding each side and a border.
_CHAR_PT = 0.65 * 7.5
_CELL_PAD_PT = 7.0
# Characters kept on one line in a column whose text may wrap (names, headers).
_WRAP_CHARS = 14
# Prefix of the render id in the HTML's keywords and the PDF's /Keywords.
RENDER_KEYWORD = "render "
# Characters of a failure's reason a report prints (a traceback's last lines); the run's
# state.json keeps the whole of it.
REASON_CHARS = 600
# An unbroken run of characters in a reason gets a break opportunity (a zero-width space) after
# every so many, so that a long token wraps inside the reason's column: that column does not wrap
# 'anywhere' (the template's `overflow-wrap: normal`), which keeps the PDF's layout of it linear
# in its length.
TOKEN_CHARS = 30
_BREAK = "\u200b"
# Control characters (but tab and line ends) are shown as escapes, lone surrogates as the
# replacement character. Text from run folders and the index has no surrogates (the store escapes
# them when it writes, the index refuses text that is not UTF-8); a suite's YAML can give them
# (`"\ud800"` in a title, a note or the reference source).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_PROVENANCE_FIELDS = ("commit", "device", "host", "python")
PLAIN_LIMIT = 1e15  # from here on fixed-point cells (rates, ratios) print in scientific notation


@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    """What a suite asks of its report (its `report:` and `reference:` blocks, resolved)."""

    suite: str
    title: str
    baseline: str | None
    metrics: list[str]
    higher_is_better: dict[str, bool | None]  # None: neither direction is better
    reference: dict[str, dict[str, float]]
    reference_source: str | None
    notes: list[str]
    curve: str = "curve.val_nll"
    item_unit: str = "tokens"  # what the family's training data are counted in
    table: PaperTableConfig | None = None  # a paper's comparison table to reproduce
    # metrics drawn against compute on a ladder of budgets (None: compute.default_compute_metrics)
    compute_metrics: list[str] | None = None
    # evaluators whose data are a proxy for the benchmark (their metrics are labelled so)
    proxies: list[str] = field(default_factory=list)
    variants: list[str]
    sweep: SweepSource | None = None  # the suite's Optuna study, when it has a `sweep:` block


@dataclass(frozen=True)
class Cell:
    """One formatted table cell; `cls` carries the CSS class (numbers, better/worse deltas)."""

    text: str
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A table ready for the template: optional grouped header row, column labels, cell rows."""

    columns: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)
    keep: int = 1  # leading columns that name a row, repeated in every part of a split table
    screen_only: frozenset[int] = frozenset()  # rows the HTML shows and the PDF leaves out

    @property
    def wide(self) -> bool:
        return len(self.columns) > WIDE_COLUMNS


def column_widths(table: Table) -> list[float]:
    """Each column's width in points if its numbers stay on one line (`td.num` does not wrap)
    and its names and header wrap after `_WRAP_CHARS` characters: an upper bound on the width
    the PDF layout needs for the column."""
    widths = []
    for j, label in enumerate(table.columns):
        cells = [row[j] for row in table.rows]
        numbers = [len(c.text) for c in cells if "num" in c.cls.split()]
        words = [len(w) for c in cells if "num" not in c.cls.split() for w in c.text.split()]
        words += [len(w) for w in label.split()]
        chars = max([*numbers, min(max(words, default=1), _WRAP_CHARS)])
        widths.append(chars * _CHAR_PT + _CELL_PAD_PT)
    return widths


def fit_width(table: Table, width_pt: float) -> list[Table]:
    """`table` as one or more tables that each fit `width_pt`: whole column blocks (header
    groups, or single columns) in order, each part repeating the `keep` leading columns."""
    widths = column_widths(table)
    head = sum(widths[: table.keep])
    parts: list[list[Block]] = [[]]
    used = head
    for block in _blocks(table):
        need = sum(widths[j] for j in block.columns)
        if parts[-1] and used + need > width_pt:
            parts.append([])
            used = head
        parts[-1].append(block)
        used += need
    if len(parts) == 1:
        return [table]
    return [_part(table, blocks) for blocks in parts]


@dataclass(frozen=True)
class Block:
    """Columns that stay together when a table is split, with their header group if any."""

    columns: range
    group: tuple[str, int] | None


def _blocks(table: Table) -> list[Block]:
    """The blocks after the `keep` leading columns: the header groups where the table has them
    (the first group must be the leading columns), else single columns."""
    if not table.groups:
        return [Block(range(j, j + 1), None) for j in range(table.keep, len(table.columns))]
    if table.groups[0][1] != table.keep:
        raise ValueError(f"the first header group must span the {table.keep} leading columns")
    blocks, start = [], 0
    for group in table.groups:
        blocks.append(Block(range(start, start + group[1]), group))
        start += group[1]
    return blocks[1:]


def _part(table: Table, blocks: list[Block]) -> Table:
    """The leading columns and those of `blocks`, with their header groups."""
    index = [*range(table.keep), *(j for b in blocks for j in b.columns)]
    groups = ([table.groups[0], *(b.group for b in blocks if b.group is not None)]
              if table.groups else [])
    return Table(columns=[table.columns[j] for j in index],
                 rows=[[row[j] for j in index] for row in table.rows],
                 groups=groups, keep=table.keep, screen_only=table.screen_only)


def printed_runs(table: Table) -> Table:
    """A per-run table (rows named by their variant in the first column) whose rows past the
    first PDF_RUNS_PER_VARIANT of each variant are left out of the PDF."""
    seen: Counter[str] = Counter()
    hidden = set()
    for i, row in enumerate(table.rows):
        seen[row[0].text] += 1
        if seen[row[0].text] > PDF_RUNS_PER_VARIANT:
            hidden.add(i)
    return replace(table, screen_only=frozenset(hidden))


def render_report(index_path: Path, spec: ReportSpec, out_dir: Path) -> tuple[Path, Path]:
    """Write out_dir/<suite>.html and out_dir/<suite>.pdf, each atomically; return both paths."""
    if not spec.suite or Path(spec.suite).name != spec.suite:
        raise UserError(f"suite name {spec.suite!r}: expected a plain name to name report files")
    if spec.baseline is not None and spec.baseline not in spec.variants:
        raise UserError(
            f"report.baseline of suite {spec.suite!r}: {spec.baseline!r} is not one of its "
            f"variants ({', '.join(spec.variants)})"
        )
    if spec.table is not None and spec.table.ratios and spec.baseline is None:
        raise UserError(f"report.table.ratios of suite {spec.suite!r}: ratios need "
                        "report.baseline")
    study = study_mod.load_sweep(spec.sweep, index_path) if spec.sweep is not None else None
    data = tables.load_suite(index_path, spec.suite, required=spec.sweep is None,
                             curves=[spec.curve])
    html = stamp(render_html(index_path, spec, data, study))
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = out_dir / f"{spec.suite}.html", out_dir / f"{spec.suite}.pdf"
    write_pair(html, html_path, pdf_path)
    return html_path, pdf_path


def render_id(html: str) -> str:
    """The id of one render: a hash of its HTML, so the same report gets the same id."""
    return hashlib.sha256(html.encode("utf-8")).hexdigest()[:16]


def stamp(html: str) -> str:
    """`html` with its render id as keywords metadata, which WeasyPrint copies into the PDF's
    /Keywords: an HTML and a PDF belong together when they carry the same id."""
    tag = f'<meta name="keywords" content="{RENDER_KEYWORD}{render_id(html)}">'
    return html.replace("<head>", f"<head>\n{tag}", 1)


def write_pair(html: str, html_path: Path, pdf_path: Path) -> None:
    """Write the HTML and its PDF so that both come from one render: both are made as
    temporaries beside them first and renamed only once both exist, so a PDF that fails (or a
    kill while it is laid out) leaves the previous pair as it was."""
    remove_stale_temporaries(html_path.parent)  # what a killed render left
    with tempfile.TemporaryDirectory(dir=html_path.parent, prefix=f".{html_path.stem}.",
                                     suffix=".tmp") as tmp:
        new_html, new_pdf = Path(tmp) / html_path.name, Path(tmp) / pdf_path.name
        new_html.write_text(html, encoding="utf-8")
        weasyprint.HTML(string=html).write_pdf(new_pdf)
        for path in (new_html, new_pdf):
            path.chmod(0o644)
        os.replace(new_pdf, pdf_path)
        os.replace(new_html, html_path)


def render_html(index_path: Path, spec: ReportSpec, data: tables.SuiteData | None,
                study: SweepData | None = None) -> str:
    """The whole report as one self-contained HTML document; without `data` (no finished run of
    the suite's variants) only the sweep is reported."""
    template = _environment().get_template("report.html.j2")
    parts = variant_parts(spec, data) if data is not None else {
        "variants": [], "main": None, "per_seed": None, "comparison": None}
    sweep = sweep_section(study) if study is not None else None
    wide = [parts["main"], parts["per_seed"], parts["comparison"], sweep and sweep.trials]
    orientation = "landscape" if any(t is not None and t.wide for t in wide) else "portrait"
    return template.render(
        spec=spec,
        index_path=str(index_path),
        sweep=sweep,
        sweep_storage=study_mod.display_storage(spec.sweep.storage) if spec.sweep else None,
        page="A4 landscape" if orientation == "landscape" else "A4",
        fit=lambda table: fit_width(table, CONTENT_WIDTH_PT[orientation]),
        **parts,
    )


def variant_parts(spec: ReportSpec, data: tables.SuiteData) -> dict[str, Any]:
    """The template's values for the suite's variants (`main` None: there are none to show)."""
    variants = tables.variant_order(spec.variants, data)
    summary = tables.summary_table(data, variants, spec.metrics, spec.baseline, spec.reference)
    consumed = tables.compute_table(data, variants, spec.item_unit)
    shared, per_run = provenance_tables(tables.provenance_table(data, variants))
    comparison = None
    if spec.table is not None:
        frame = tables.paper_table(data, variants, spec.table.columns, spec.table.ratios,
                                   spec.baseline, spec.reference)
        comparison = comparison_table(spec.table, variants, frame)
    runs = data.runs
    main = main_table(spec, variants, summary, consumed)
    efficiency = tables.efficiency_table(data, variants, spec.item_unit)
    recorded = set(data.finals["metric"])
    shown = data.finals[data.finals["metric"].isin(spec.metrics)]
    return dict(
        variants=variants,
        n_finished=int((runs["state"] == tables.FINISHED).sum()),
        n_other=int((runs["state"] != tables.FINISHED).sum()),
        started=_text(runs["started"].dropna().min()),
        ended=_text(runs["ended"].dropna().max()),
        comparison=comparison,
        comparison_referenced=comparison is not None
        and any(row[0].cls == "paper" for row in comparison.rows),
        main=main,
        main_stderr=STDERR_COLUMN in main.columns,  # its legend only under such a column
        # deltas of seeds that all agree: their legend only where there is one
        main_flat=spec.baseline is not None and any(
            tables.no_spread(low, high) for low, high in zip(
                summary["delta_low"], summary["delta_high"], strict=True)),
        undirected=[m for m in spec.metrics if spec.higher_is_better.get(m) is None],
        unrecorded=[m for m in spec.metrics if m not in recorded],
        undrawn=int((~compute.drawable(shown["value"])).sum()),
        drawn_limit=f"{compute.DRAWN_LIMIT:.0e}",
        efficiency=None if efficiency is None else efficiency_table(efficiency, spec.item_unit),
        ratios=ratios_section(spec, data, variants),
        per_seed=printed_runs(per_seed_table(tables.per_seed_table(data, variants, spec.metrics,
                                                                   spec.item_unit))),
        unfinished=printed_runs(unfinished_table(tables.unfinished_table(data, variants))),
        shared_provenance=shared,
        per_run=printed_runs(per_run),
        pdf_runs=PDF_RUNS_PER_VARIANT,
        packages=package_lines(tables.package_table(data)),
        curve_svg=_markup(figures.curve_figure(data, variants, spec.curve)),
        metric_svg=_markup(figures.metric_figure(data, variants, spec.metrics, summary)),
        eval_svg=_markup(figures.evaluation_curves_figure(data, variants)),
        ladder=compute_section(spec, data, variants),
        resamples=compute.RESAMPLES,
    )


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


def compute_section(spec: ReportSpec, data: tables.SuiteData, variants: Sequence[str]
                    ) -> ComputeSection | None:
    """The section's figures and tables; None when no variant finished more than one budget."""
    if not tables.has_ladder(data):
        return None
    units = compute.ladder_units(data)
    if len(units) != 1:
        return ComputeSection("", units, [])
    metrics = spec.compute_metrics or compute.default_compute_metrics(spec.metrics)
    return ComputeSection(
        unit=units[0], units=units,
        panels=[compute_panel(spec, data, variants, m, units[0]) for m in metrics])


def ratios_section(spec: ReportSpec, data: tables.SuiteData, variants: Sequence[str]
                   ) -> Table | None:
    """Throughput and latency of each variant over the baseline's, beside the paper's ratios;
    None without a baseline or without any such record."""
    ratios = None if spec.baseline is None else compute.efficiency_ratios(
        data, variants, spec.baseline, spec.metrics, spec.item_unit, spec.reference)
    return None if ratios is None else ratios_table(ratios)


def compute_panel(spec: ReportSpec, data: tables.SuiteData, variants: Sequence[str],
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
    proxy = metric.partition(".")[0] in spec.proxies
    svg = figures.compute_figure(points, variants, metric, unit, fits, goal, spec.baseline, proxy)
    recorded = int((data.ladder["metric"] == metric).sum())
    return ComputePanel(metric, _markup(svg), fits_table(fits), match, proxy,
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
            cells = [
                Cell(compute.NOT_REACHED if math.isnan(m.compute) else bound + fmt_sci(m.compute),
                     "num"),
                Cell(_interval(low_bound + _reached(m.compute_low, math.inf, fmt_sci),
                               _reached(m.compute_high, math.inf, fmt_sci)), "num"),
                Cell(compute.NOT_REACHED if math.isnan(m.ratio)
                     else bound.replace("≤", "≥") + fmt_ratio(m.ratio), "num"),
                Cell(_interval(_reached(m.ratio_low, 0.0, fmt_ratio),
                               low_bound.replace("≤", "≥")
                               + _reached(m.ratio_high, 0.0, fmt_ratio)), "num"),
                Cell(f"{m.not_reached:.1%}", "num"),
                Cell(m.resampling),
            ]
        rows.append([Cell(variant, "name"), *cells, Cell(fmt_ratio(claim), "num paper")])
    return Table(columns=["variant", f"{unit} to match", "95% CI", "ratio", "95% CI (ratio)",
                          "resamples not reaching", "seeds resampled", "paper"], rows=rows)


def _reached(x: float, never: float, fmt: Callable[[float], str]) -> str:
    """An interval end, or 'not reached' where it stands for resamples that never match."""
    return compute.NOT_REACHED if x == never else fmt(x)


def _interval(low: str, high: str) -> str:
    """An interval's two ends; one 'not reached' when neither end is reached."""
    return compute.NOT_REACHED if low == high == compute.NOT_REACHED else f"[{low}, {high}]"


def ratios_table(frame: pd.DataFrame) -> Table:
    """Per variant: each efficiency ratio to the baseline, beside the paper's where given."""
    metrics = list(dict.fromkeys(frame.columns.get_level_values("metric")))
    columns = ["variant"]
    for metric in metrics:
        columns += [f"{_compute_label(metric)} ×", "paper ×"]
    rows = [[Cell(str(variant), "name"),
             *[Cell(fmt_ratio(frame.loc[variant, (m, field)]),
                    "num paper" if field == "reference_ratio" else "num")
               for m in metrics for field in ("ratio", "reference_ratio")]]
            for variant in frame.index]
    return Table(columns=columns, rows=rows)


@dataclass(frozen=True)
class BestTrial:
    """The best trial ready for the template; `config` is None when its run is not indexed."""

    number: int
    value: str
    params: list[tuple[str, str]]
    run_id: str
    config: list[Cell] | None


@dataclass(frozen=True)
class SweepSection:
    """A study ready for the template: counts, best trial, every trial, figures."""

    storage: str
    counts: Table
    n_complete: int
    best: BestTrial | None
    trials: Table
    history_svg: Markup | None
    importance_svg: Markup | None
    parallel_svg: Markup | None
    intermediate_svg: Markup | None
    dashboard: str


def sweep_section(study: SweepData) -> SweepSection:
    """Format a study's numbers and draw its figures."""
    counts = study_mod.state_counts(study.trials)
    labels = {"surplus": "surplus, never run"}
    best = study_mod.best_trial(study)
    return SweepSection(
        storage=study_mod.display_storage(study.source.storage),
        counts=Table(columns=[labels.get(s, s) for s in study_mod.STATES],
                     rows=[[Cell(str(counts[s]), "num") for s in study_mod.STATES]], keep=0),
        n_complete=counts["complete"],
        best=best_trial_view(study, best) if best is not None else None,
        trials=trials_table(study.source.metric, study_mod.trials_frame(study),
                            study_mod.param_names(study)),
        history_svg=_markup(study_mod.history_figure(study)),
        importance_svg=_markup(study_mod.importance_figure(study)),
        parallel_svg=_markup(study_mod.parallel_figure(study)),
        intermediate_svg=_markup(study_mod.intermediate_figure(study)),
        dashboard=study_mod.dashboard_command(study.source.storage),
    )


def best_trial_view(study: SweepData, trial: FrozenTrial) -> BestTrial:
    """The best trial's value and parameters at full useful precision, and its run's config with
    the searched fields first and marked."""
    run_id = trial.user_attrs.get("run_id")
    config = study_mod.run_config(study, run_id)
    entries = None
    if config is not None:
        entries = [Cell(f"{path} = {value}", "searched" if searched else "")
                   for path, value, searched in study_mod.config_entries(
                       config, study.source.params)]
    return BestTrial(
        number=trial.number,
        value=f"{trial.value:.6g}",
        params=[(name, fmt_param(trial.params[name], ".6g"))
                for name in study_mod.param_names(study) if name in trial.params],
        run_id=_text(run_id),
        config=entries,
    )


def trials_table(metric: str, frame: pd.DataFrame, params: Sequence[str]) -> Table:
    """One row per trial by number; a reason column only when some trial failed with one."""
    with_reason = frame["reason"].notna().any()
    columns = ["trial", "state", metric, *params, "run", "duration", "retry of"]
    columns += ["reason"] if with_reason else []
    rows = []
    for rec in frame.to_dict("records"):
        row = [
            Cell(str(rec["number"]), "num"),
            Cell(rec["state"], f"trial-{rec['state']}"),
            Cell(fmt_value(rec["value"]), "num"),
            *[Cell(fmt_param(rec[p]), "num") for p in params],
            Cell(_short(rec["run_id"]) if rec["run_id"] else DASH, "mono"),
            Cell(fmt_duration(rec["duration_s"]), "num"),
            Cell(DASH if rec["retry_of"] is None else str(rec["retry_of"]), "num"),
        ]
        if with_reason:
            row.append(Cell(reason_text(rec["reason"]), "reason"))
        rows.append(row)
    return Table(columns=columns, rows=rows)


def main_table(
    spec: ReportSpec, variants: Sequence[str], summary: pd.DataFrame, compute: pd.DataFrame
) -> Table:
    """One row per variant: each metric's seed mean and interval, eval stderr, paper, delta."""
    blocks = []  # per metric: which sub-columns carry anything
    for metric in spec.metrics:
        rows = summary.xs(metric, level="metric")
        blocks.append((metric, rows["stderr"].notna().any(), rows["reference"].notna().any()))
    groups: list[tuple[str, int]] = [("", 2)]
    columns = ["variant", "seeds"]
    for metric, has_stderr, has_reference in blocks:
        sub = ["mean ± 95% CI (seeds)"]
        sub += [STDERR_COLUMN] if has_stderr else []
        sub += ["paper"] if has_reference else []
        sub += [f"Δ vs {spec.baseline} (95% CI, test)"] if spec.baseline else []
        groups.append((metric, len(sub)))
        columns += sub
    flops, items, rate = tables.compute_metrics(spec.item_unit)
    groups.append(("compute consumed (mean over seeds)", 3))
    columns += ["FLOPs", spec.item_unit, f"{spec.item_unit}/s"]
    rows = []
    for variant in variants:
        row = [Cell(variant, "name"), Cell(str(int(compute.loc[variant, "n"])), "num")]
        for metric, has_stderr, has_reference in blocks:
            est = summary.loc[(variant, metric)]
            row.append(
                Cell(fmt_interval(est["mean"], est["low"], est["high"], int(est["n"])), "num")
            )
            if has_stderr:
                row.append(Cell(fmt_value(est["stderr"]), "num"))
            if has_reference:
                row.append(Cell(fmt_value(est["reference"]), "num paper"))
            if spec.baseline:
                row.append(_delta_cell(variant, spec, metric, est))
        row.append(Cell(fmt_sci(compute.loc[variant, flops]), "num"))
        row.append(Cell(fmt_sci(compute.loc[variant, items]), "num"))
        row.append(Cell(fmt_rate(compute.loc[variant, rate]), "num"))
        rows.append(row)
    return Table(columns=columns, rows=rows, groups=groups, keep=2)


def comparison_table(config: PaperTableConfig, variants: Sequence[str],
                     frame: pd.DataFrame) -> Table:
    """The paper-style table: `mean ± half` per column and `×ratio` per ratio metric, each
    variant followed by its reference row where the suite gives any of these numbers."""
    scale = config.scale

    def label(metric: str) -> str:
        return config.labels.get(metric, metric)

    columns = ["variant", *map(label, config.columns), *[f"{label(m)} ×" for m in config.ratios]]
    rows = []
    for variant in variants:
        rec = frame.loc[variant]
        rows.append([
            Cell(variant, "name"),
            *[Cell(fmt_mean_half(rec[(m, "mean")] * scale, rec[(m, "half")] * scale), "num")
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


def efficiency_table(frame: pd.DataFrame, unit: str) -> Table:
    """One row per variant: the efficiency metrics some run recorded, each with its unit."""
    flops_per_s, mfu, rate, memory = tables.efficiency_metrics(unit)
    formats = {flops_per_s: ("FLOP/s", fmt_sci), mfu: ("MFU", fmt_percent),
               rate: (f"{unit}/s", fmt_rate), memory: ("peak memory", fmt_gib)}
    shown = [m for m in formats if m in frame.columns]
    rows = [[Cell(str(variant), "name"),
             *[Cell(formats[m][1](frame.loc[variant, m]), "num") for m in shown]]
            for variant in frame.index]
    return Table(columns=["variant", *[formats[m][0] for m in shown]], rows=rows)


def per_seed_table(frame: pd.DataFrame) -> Table:
    """Every finished run's values, formatted like the main table."""
    keys = ("run_id", "variant", "seed", "budget")
    metric_columns = [c for c in frame.columns if c not in keys]
    budget = ["budget"] if "budget" in frame else []
    columns = ["variant", "seed", "run", *budget, *[_compute_label(c) for c in metric_columns]]
    rows = [
        [
            Cell(str(rec["variant"]), "name"),
            Cell(str(rec["seed"]), "num"),
            Cell(_short(rec["run_id"]), "mono"),
            *[Cell(fmt_sci(rec[c]), "num") for c in budget],
            *[Cell(_format_column(c, rec[c]), "num") for c in metric_columns],
        ]
        for rec in frame.to_dict("records")
    ]
    return Table(columns=columns, rows=rows, keep=3 + len(budget))


def unfinished_table(frame: pd.DataFrame) -> Table:
    """Failed and unfinished runs with their reason (cut short: `reason_text`, pointing to the
    run's folder, `path`)."""
    columns = ["variant", "seed", "run", "state", "reason", "started", "ended"]
    rows = [
        [
            Cell(str(rec["variant"]), "name"),
            Cell(str(rec["seed"]), "num"),
            Cell(_short(rec["run_id"]), "mono"),
            Cell(str(rec["state"]), "state"),
            Cell(reason_text(rec["reason"], rec["path"]), "reason"),
            Cell(_text(rec["started"])),
            Cell(_text(rec["ended"])),
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
            Cell(_short(rec["run_id"]), "mono"),
            Cell(str(rec["state"])),
            *[Cell(_text(rec[name]), "mono" if name == "commit" else "") for name in varying],
            Cell(_text(rec["started"])),
            Cell(_text(rec["ended"])),
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


def fmt_value(x: float | None) -> str:
    """Four decimals below 10 (accuracies, losses), two up to 1000 (perplexities, percentages),
    scientific for huge or tiny values: as many digits as seed noise can leave meaningful."""
    if x is None or math.isnan(x):
        return DASH
    size = abs(x)
    if size != 0 and (size >= 1e5 or size < 1e-3):
        return f"{x:.3e}"
    if size >= 1000:
        return f"{x:,.1f}"
    return f"{x:.2f}" if size >= 10 else f"{x:.4f}"


def fmt_sci(x: float | None) -> str:
    """Counts of FLOPs and tokens: always scientific, so columns compare at a glance."""
    return DASH if x is None or math.isnan(x) else f"{x:.3e}"


def _fixed(x: float, spec: str) -> str:
    """`x` in the fixed-point format `spec`, or scientific from PLAIN_LIMIT on (and infinite),
    so that no cell prints hundreds of digits."""
    return format(x, spec) if abs(x) < PLAIN_LIMIT else f"{x:.3e}"


def fmt_rate(x: float | None) -> str:
    """Throughput: whole units with thousands separators."""
    return DASH if x is None or math.isnan(x) else _fixed(x, ",.0f")


def fmt_percent(x: float | None) -> str:
    """A fraction such as MFU as a percentage: 0.4123 -> 41.2%."""
    return DASH if x is None or math.isnan(x) else _fixed(100 * x, ".1f") + "%"


def fmt_gib(x: float | None) -> str:
    """Bytes in GiB, two decimals: device memory at a glance."""
    return DASH if x is None or math.isnan(x) else _fixed(x / 2**30, ",.2f") + " GiB"


def fmt_signed(x: float) -> str:
    """A difference with its sign always shown."""
    return DASH if math.isnan(x) else ("+" if x >= 0 else "−") + fmt_value(abs(x))


def fmt_interval(mean: float, low: float, high: float, n: int) -> str:
    """`mean ± half-width`; a single seed has no interval and says so."""
    if n == 0 or math.isnan(mean):
        return DASH
    if math.isnan(low):
        return f"{fmt_value(mean)} (n={n})"
    return fmt_mean_half(mean, (high - low) / 2)


def fmt_mean_half(mean: float, half: float) -> str:
    """`mean ± half-width` for a compact table: the mean alone without an interval (one seed)."""
    if math.isnan(mean):
        return DASH
    return fmt_value(mean) if math.isnan(half) else f"{fmt_value(mean)} ± {fmt_value(half)}"


def fmt_ratio(x: float) -> str:
    """A ratio to the baseline, as papers print it: ×1.57."""
    return DASH if math.isnan(x) else "×" + _fixed(x, ".2f")


def fmt_param(x: object, spec: str = ".4g") -> str:
    """A sampled parameter: floats to a few significant digits (log-scale ranges span decades),
    anything else (ints, categories) as it is."""
    if x is None:
        return DASH
    return format(x, spec) if isinstance(x, float) else str(x)


def fmt_duration(seconds: float | None) -> str:
    """Wall time as h:mm:ss."""
    if seconds is None or math.isnan(seconds):
        return DASH
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _delta_cell(variant: str, spec: ReportSpec, metric: str, est: pd.Series) -> Cell:
    if variant == spec.baseline:
        return Cell("baseline", "baseline")
    delta, low, high = est["delta"], est["delta_low"], est["delta_high"]
    if math.isnan(delta):
        return Cell(DASH, "num")
    text = fmt_signed(delta)
    flat = tables.no_spread(low, high)
    if flat:  # every seed gave the same difference: no interval, and no p (0 over 0)
        text += f" ({est['delta_test']}; no spread, p undefined)"
    else:
        if not math.isnan(low):
            text += f" ± {fmt_value((high - low) / 2)}"
        text += f" ({est['delta_test']}" + (
            f", p={est['delta_p']:.2g})" if not math.isnan(est["delta_p"]) else ")")
    cls = "num"
    higher = spec.higher_is_better.get(metric)
    if higher is not None and delta != 0:
        cls += " better" if (delta > 0) == higher else " worse"
        if not flat and not math.isnan(low) and (low > 0 or high < 0):
            cls += " clear"  # the interval excludes no difference
    return Cell(text, cls)


def _compute_label(column: str) -> str:
    """'train.flops' -> 'FLOPs', 'train.images_per_s' -> 'images/s'; other columns as they are."""
    if column == "train.flops":
        return "FLOPs"
    if column.startswith("train.") and column.count(".") == 1:
        return column.removeprefix("train.").replace("_per_s", "/s")
    return column


def _format_column(column: str, value: float) -> str:
    if column.startswith("train.") and column.count(".") == 1:
        return fmt_rate(value) if column.endswith("_per_s") else fmt_sci(value)
    return fmt_value(value)


def _short(run_id: str) -> str:
    return run_id if len(run_id) <= 12 else run_id[:12] + "…"


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return str(value)


def reason_text(reason: object, folder: str | None = None) -> str:
    """Why a run ended, as a table cell prints it: the first REASON_CHARS characters, with
    break opportunities in long unbroken tokens, and where it was cut, where the whole is (the
    run's `folder` when known)."""
    text = _text(reason)
    if len(text) <= REASON_CHARS:
        return breakable(text)
    where = f"{folder}/state.json" if folder else "the run's state.json"
    return (f"{breakable(text[:REASON_CHARS])}… (cut at {REASON_CHARS:,} of {len(text):,} "
            f"characters; full reason in {where})")


def breakable(text: str) -> str:
    """`text` with a zero-width space after every TOKEN_CHARS characters of an unbroken run."""
    return re.sub(rf"\S{{{TOKEN_CHARS}}}(?=\S)", lambda m: m.group() + _BREAK, text)


def printable(text: str) -> str:
    """`text` safe to print: control characters as escapes (`\\x1b`), lone surrogates as the
    replacement character; tabs and line ends are kept."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _SURROGATE.sub("\ufffd", text)


def _finalize(value: object) -> object:
    """Every value the template prints: text from the index or the suite made `printable`
    (figures, already markup, are left as they are)."""
    return printable(value) if isinstance(value, str) and not isinstance(value, Markup) \
        else value


def _markup(svg: str | None) -> Markup | None:
    return Markup(svg) if svg else None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )


