"""A suite's sweep ready for the template: counts by state, the best trial with its run's
config, every trial, and Optuna's figures (`study` reads and draws them)."""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from markupsafe import Markup
from optuna.trial import FrozenTrial

from bench.report import study
from bench.report.formatting import (
    DASH,
    cell_text,
    fmt_duration,
    fmt_param,
    fmt_value,
    reason_text,
    short_id,
    svg_markup,
)
from bench.report.layout import Cell, Table
from bench.report.study import SweepData


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


def sweep_section(data: SweepData) -> SweepSection:
    """Format a study's numbers and draw its figures."""
    counts = study.state_counts(data.trials)
    labels = {"surplus": "surplus, never run"}
    best = study.best_trial(data)
    return SweepSection(
        storage=study.display_storage(data.source.storage),
        counts=Table(columns=[labels.get(s, s) for s in study.STATES],
                     rows=[[Cell(str(counts[s]), "num") for s in study.STATES]], keep=0),
        n_complete=counts["complete"],
        best=best_trial_view(data, best) if best is not None else None,
        trials=trials_table(data.source.metric, study.trials_frame(data),
                            study.param_names(data)),
        history_svg=svg_markup(study.history_figure(data)),
        importance_svg=svg_markup(study.importance_figure(data)),
        parallel_svg=svg_markup(study.parallel_figure(data)),
        intermediate_svg=svg_markup(study.intermediate_figure(data)),
        dashboard=study.dashboard_command(data.source.storage),
    )


def best_trial_view(data: SweepData, trial: FrozenTrial) -> BestTrial:
    """The best trial's value and parameters at full useful precision, and its run's config with
    the searched fields first and marked."""
    run_id = trial.user_attrs.get("run_id")
    config = study.run_config(data, run_id)
    entries = None
    if config is not None:
        entries = [Cell(f"{path} = {value}", "searched" if searched else "")
                   for path, value, searched in study.config_entries(
                       config, data.source.params)]
    return BestTrial(
        number=trial.number,
        value=f"{trial.value:.6g}",
        params=[(name, fmt_param(trial.params[name], ".6g"))
                for name in study.param_names(data) if name in trial.params],
        run_id=cell_text(run_id),
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
            Cell(short_id(rec["run_id"]) if rec["run_id"] else DASH, "mono"),
            Cell(fmt_duration(rec["duration_s"]), "num"),
            Cell(DASH if rec["retry_of"] is None else str(rec["retry_of"]), "num"),
        ]
        if with_reason:
            row.append(Cell(reason_text(rec["reason"]), "reason"))
        rows.append(row)
    return Table(columns=columns, rows=rows)
