"""A suite's Optuna sweep in its report: counts by state, the best trial with its run's config,
every trial, and Optuna's own figures (history, importances, parallel coordinates, intermediate
values) as inline SVG.

Read-only: the study comes from its storage, each trial's config from its run's row in the results
index. A journal file that does not exist is a study not started yet; it is never created here.
The trials are read once and every number and figure is drawn from that one snapshot, so a report
taken while workers run is consistent with itself.

Choices. A pruned trial's Optuna value is its last intermediate value (the pruner's metric, maybe
negated), not the objective, so only complete trials show a value. Importances are fANOVA (a
scikit-learn random forest) with a fixed seed, over the complete trials and the parameters that
vary among them: the same study always draws the same bars. Optuna's plots set the `ggplot` style
sheet globally; here they draw inside matplotlib's default style with that sheet on top, and the
rc parameters are restored afterwards.
"""

import json
import shlex
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots
from sqlalchemy.engine import make_url

from bench.report.figures import to_svg
from bench.report.suite_data import json_object
from bench.store.queries import study_runs

# Trial states as the report counts them; `surplus` trials failed without running.
STATES = ("complete", "pruned", "failed", "surplus", "running", "waiting")
_STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                TrialState.WAITING: "waiting"}
# Line colours of the intermediate-values figure, by the trial's state.
_STATE_COLOURS = {"complete": "#1f77b4", "pruned": "#d62728", "running": "#7f7f7f"}
_FIGSIZE = (7.2, 3.4)
IMPORTANCE_SEED = 0


@dataclass(frozen=True, kw_only=True)
class SweepSource:
    """Where a suite's study lives and what it optimises (its `sweep:` block, resolved)."""

    study: str
    storage: str  # a journal file path or a database URL
    metric: str  # the objective: a run's final metric
    direction: str  # minimize or maximize
    params: list[str]  # the searched config fields, in the suite's order
    trials: int  # complete or pruned trials the sweep stops at
    reported: str  # the validation metric the pruner hears
    command: str  # the command that runs the sweep


@dataclass(frozen=True)
class SweepData:
    """One snapshot of the study, with the index rows of its trials' runs."""

    source: SweepSource
    study: optuna.Study  # in memory, holding exactly `trials`
    trials: list[FrozenTrial]  # by number
    runs: pd.DataFrame  # run_id, state, config (JSON text) of the study's runs


def load_sweep(source: SweepSource, index_path: Path) -> SweepData | None:
    """The study's trials and their runs' index rows; None when the study does not exist yet."""
    from bench.execution.sweep import (
        open_storage,  # imports the runner (torch): only sweeps need it
    )

    if "://" not in source.storage and not Path(source.storage).is_file():
        return None
    storage = open_storage(source.storage, heartbeat_s=60)  # no heartbeat: it runs no trial
    if source.study not in optuna.get_all_study_names(storage):
        return None
    stored = optuna.load_study(study_name=source.study, storage=storage)
    trials = sorted(stored.get_trials(deepcopy=True), key=lambda t: t.number)
    snapshot = optuna.storages.InMemoryStorage()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    try:
        snapshot.create_new_study([stored.direction], source.study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study = optuna.Study(source.study, snapshot)
    study.add_trials(trials)
    return SweepData(source, study, trials, study_runs(index_path, source.study))


def trial_state(trial: FrozenTrial) -> str:
    """The trial's state as the report names it (a surplus trial is not a failure)."""
    if trial.state == TrialState.FAIL and trial.user_attrs.get("surplus"):
        return "surplus"
    return _STATE_NAMES[trial.state]


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials per state, every state of STATES present (0 where none)."""
    counts = dict.fromkeys(STATES, 0)
    for trial in trials:
        counts[trial_state(trial)] += 1
    return counts


def best_trial(data: SweepData) -> FrozenTrial | None:
    """The complete trial with the best objective value (the lowest number on ties)."""
    complete = [t for t in data.trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    sign = 1.0 if data.study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0

    def rank(t: FrozenTrial) -> tuple[float, int]:
        assert t.value is not None  # a complete trial has its objective value
        return sign * t.value, t.number

    return min(complete, key=rank)


def param_names(data: SweepData) -> list[str]:
    """The searched fields in the suite's order, then any a trial has that the suite no longer
    searches (the space changed during the study)."""
    extra = sorted({p for t in data.trials for p in t.params} - set(data.source.params))
    return [*data.source.params, *extra]


def trials_frame(data: SweepData) -> pd.DataFrame:
    """One row per trial by number: state, objective value (complete trials only), parameters,
    run id, seconds from start to completion, the trial it retries and why it failed."""
    params = param_names(data)
    rows = []
    for t in data.trials:
        start, end = t.datetime_start, t.datetime_complete
        rows.append({
            "number": t.number,
            "state": trial_state(t),
            "value": t.value if t.state == TrialState.COMPLETE else None,
            **{name: t.params.get(name) for name in params},
            "run_id": t.user_attrs.get("run_id"),
            "duration_s": (end - start).total_seconds()
            if end is not None and start is not None else None,
            "retry_of": t.user_attrs.get("retry_of"),
            "reason": t.user_attrs.get("reason"),
        })
    columns = ["number", "state", "value", *params, "run_id", "duration_s", "retry_of", "reason"]
    # Object columns keep each cell as the trial has it (an int parameter stays an int, missing
    # stays None) rather than widening a column to float.
    return pd.DataFrame(rows, columns=columns, dtype=object)


def run_config(data: SweepData, run_id: str | None) -> dict[str, Any] | None:
    """The resolved config a trial's run recorded in the index; None when it is not there."""
    rows = data.runs[data.runs["run_id"] == run_id]
    text = rows["config"].iloc[0] if not rows.empty else None
    if not isinstance(text, str):
        return None
    return json_object(text, "config", str(run_id))


def config_entries(config: dict[str, Any], searched: list[str]) -> list[tuple[str, str, bool]]:
    """A resolved config flattened to (dotted path, compact JSON value, searched): the searched
    fields (dotted paths inside `config`) first in the suite's order, then the rest by path."""
    flat = dict(_flatten(config))
    wanted = [f"config.{name}" for name in searched if f"config.{name}" in flat]
    rest = sorted(set(flat) - set(wanted))
    return [(path, json.dumps(flat[path]), path in wanted) for path in [*wanted, *rest]]


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def display_storage(storage: str) -> str:
    """The storage as the report prints it: a database URL's password hidden."""
    if "://" not in storage:
        return storage
    return make_url(storage).render_as_string(hide_password=True)


def dashboard_command(storage: str) -> str:
    """How to open the study in optuna-dashboard, which takes a journal file path or a database
    URL as its one positional argument (it tells the two apart by whether the file exists)."""
    return shlex.join(["optuna-dashboard", display_storage(storage)])


@contextmanager
def _optuna_style() -> Iterator[None]:
    """Draw Optuna plots in a fixed style, and close the figures they open through pyplot
    (which would otherwise keep every one of them)."""
    before = set(plt.get_fignums())
    with warnings.catch_warnings(), matplotlib.style.context("default"), \
            matplotlib.rc_context({"figure.figsize": _FIGSIZE, "font.size": 8}):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A parameter every trial shares gets a flat axis; matplotlib widens it and says so.
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims")
        try:
            yield
        finally:
            for num in set(plt.get_fignums()) - before:
                plt.close(num)


def _svg(ax: Axes, title: str, salt: str) -> str:
    """One Optuna plot at the report's sizes: its own title, small text, a tight layout."""
    fig = ax.figure
    assert isinstance(fig, Figure)  # Optuna draws each plot on a figure of its own
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(title, fontsize=9, y=1.03)
    for text in ax.texts:  # the importances' bar labels
        text.set_fontsize(7)
    for each in fig.axes:
        each.xaxis.label.set_fontsize(8)
        each.yaxis.label.set_fontsize(8)
        each.tick_params(labelsize=7)
        legend = each.get_legend()
        for text in legend.get_texts() if legend else ():
            text.set_fontsize(7)
    fig.set_layout_engine("tight")
    return to_svg(fig, salt)


def history_figure(data: SweepData) -> str | None:
    """Each complete trial's objective value and the best so far; None without complete trials."""
    if best_trial(data) is None:
        return None
    src = data.source
    with _optuna_style():
        ax = optuna_plots.plot_optimization_history(data.study, target_name=src.metric)
        ax.legend(loc="best")
        return _svg(ax, f"Optimization history: {src.metric} ({src.direction})", "sweep-history")


def importance_params(data: SweepData) -> list[str]:
    """The parameters importances can be computed for: set in every complete trial and varying
    among them, with at least two complete trials; empty otherwise."""
    complete = [t for t in data.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return []
    return [p for p in param_names(data)
            if all(p in t.params for t in complete) and len({t.params[p] for t in complete}) > 1]


def importance_figure(data: SweepData) -> str | None:
    """fANOVA importances of the varying parameters; None when importance_params is empty."""
    params = importance_params(data)
    if not params:
        return None
    with _optuna_style():
        ax = optuna_plots.plot_param_importances(
            data.study, optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
            params, target_name=data.source.metric)
        legend = ax.get_legend()
        assert legend is not None  # Optuna labels the bars with the objective
        legend.remove()  # one objective: the title names it
        return _svg(ax, f"Parameter importances for {data.source.metric} (fANOVA)",
                    "sweep-importances")


def parallel_figure(data: SweepData) -> str | None:
    """Every complete trial as a line through its parameters, coloured by its objective value;
    None under two complete trials (one line spans no range)."""
    if sum(t.state == TrialState.COMPLETE for t in data.trials) < 2:
        return None
    with _optuna_style():
        ax = optuna_plots.plot_parallel_coordinate(data.study, params=param_names(data),
                                                   target_name=data.source.metric)
        # Optuna's Blues fade to white at one end: drop that quarter so every trial shows.
        lines = next(c for c in ax.collections if isinstance(c, LineCollection))
        cmap = lines.get_cmap()
        ends = (0.0, 0.75) if cmap.name.endswith("_r") else (0.25, 1.0)
        lines.set_cmap(ListedColormap(cmap(np.linspace(*ends, 256))))
        return _svg(ax, "Parallel coordinates of the complete trials", "sweep-parallel")


def intermediate_figure(data: SweepData) -> str | None:
    """The values the pruner heard, per trial against the percent of its budget spent, coloured
    by the trial's state (pruned trials stand out); None when no trial reported any."""
    if not any(t.intermediate_values for t in data.trials):
        return None
    states = {t.number: trial_state(t) for t in data.trials}
    with _optuna_style():
        ax = optuna_plots.plot_intermediate_values(data.study)
        shown = set()
        for line in ax.get_lines():
            state = states[int(str(line.get_label()).removeprefix("Trial"))]
            line.set_color(_STATE_COLOURS[state])
            shown.add(state)
        ax.legend(handles=[Line2D([0], [0], color=_STATE_COLOURS[s], marker=".", label=s)
                           for s in _STATE_COLOURS if s in shown], loc="best")
        ax.set_xlabel("percent of the run's budget")
        ax.set_ylabel(data.source.reported)
        return _svg(ax, f"Intermediate values: {data.source.reported} as the pruner heard it",
                    "sweep-intermediate")
