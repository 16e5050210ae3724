"""One suite's rows of the results index, read through the store and shaped the way a report
reads them: each run's shown state and budget, the final and curve metric rows of the finished
runs compared at each variant's largest budget, and a ladder's lower rungs kept apart."""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.contract import BudgetConfig
from bench.errors import UserError
from bench.store.queries import FINISHED, suite_rows

# What follows a reference variant's name wherever a report shows it.
REFERENCE_MARK = " (reference)"


@dataclass(frozen=True)
class SuiteData:
    """The index rows of one suite, split the way a report reads them."""

    runs: pd.DataFrame  # every run of the suite, whatever its state
    finals: pd.DataFrame  # final metric rows (step NULL) of finished runs, one per run and metric
    curves: pd.DataFrame  # curve rows (step set) of finished runs
    points: pd.DataFrame  # evaluation curves (PR, ROC) of finished runs: curve, idx, x, y
    # final metric rows of every finished run at every budget of a ladder (`finals` holds only
    # each variant's largest): what a metric is read against compute from
    ladder: pd.DataFrame
    # reference variants (a checkpoint scored, nothing trained) by name -> the name every table
    # and figure shows them under, which marks them: `<name> (reference)`
    references: dict[str, str] = field(default_factory=dict)
    # the results folder the index lies in: each run's folder is `<root>/<suite>/<run_id>`
    # (where the store lies now, whatever path the index recorded when it imported the run)
    root: Path | None = None

    def shown(self, variant: str, references: Sequence[str] = ()) -> str:
        """The name a variant is shown by: marked when its runs, or the suite (`references`,
        before any run of it is recorded), say it is a reference."""
        marked = f"{variant}{REFERENCE_MARK}" if variant in references else variant
        return self.references.get(variant, marked)


def load_suite_data(index_path: Path, suite: str, required: bool = True,
                    curves: Sequence[str] | None = None) -> SuiteData | None:
    """Read one suite from the index; only finished runs feed the numbers, the rest are listed.

    Only the finished runs' metric rows are read, and of their training curves only the metrics
    named in `curves` (all when None): a report draws one curve, and the other curve rows
    outnumber everything else in a large store. A suite without finished runs (or without an
    index) is a UserError, or None when not `required` (a sweep's report can stand without the
    suite's own variants).
    """
    if not index_path.is_file():
        if not required:
            return None
        raise UserError(f"{index_path}: results index not found (suite {suite!r}); run it first")
    rows = suite_rows(index_path, suite, curves)
    runs, metrics, points = rows.runs, rows.metrics, rows.points
    # SQL NULL arrives as NaN in some columns; None keeps "missing" falsy for the text fields.
    text = ["reason", "path", "config", "provenance", "started", "ended"]
    runs[text] = runs[text].astype(object).where(runs[text].notna(), None)
    runs["state"] = _shown_states(index_path, suite, runs)
    configs = [json_object(c, "config", r) for c, r in zip(runs["config"], runs["run_id"],
                                                           strict=True)]
    # A reference variant's runs are marked by name, so every table and figure marks them alike.
    scored = pd.Series(["checkpoint" in c for c in configs], index=runs.index)
    references = {v: f"{v}{REFERENCE_MARK}" for v in runs.loc[scored, "variant"]}
    runs.loc[scored, "variant"] = runs.loc[scored, "variant"] + REFERENCE_MARK
    finished = runs.loc[runs["state"] == FINISHED, "run_id"]
    if finished.empty:
        if not required:
            return None
        states = runs["state"].value_counts().to_dict()
        seen = ", ".join(f"{n} {state}" for state, n in states.items()) or "no runs at all"
        raise UserError(f"{index_path}: suite {suite!r} has no finished runs ({seen})")
    # The runs table is authoritative for variant and seed; metric rows only name their run.
    # A variant trained on a ladder of budgets is compared at its largest (a ladder's lower
    # rungs are for reading metrics against compute, not for averaging with it).
    budgets = [_budget(c) for c in configs]
    runs["unit"] = [unit for unit, _ in budgets]
    runs["budget"] = [amount for _, amount in budgets]
    top = runs.groupby("variant")["budget"].transform("max")
    runs["compared"] = runs["budget"].isna() | (runs["budget"] == top)
    compared = runs.loc[runs["compared"], "run_id"]
    # Lower rungs keep their final rows (for `ladder`), not their curves.
    metrics = metrics[metrics["step"].isna() | metrics["run_id"].isin(compared)]
    finished = finished[finished.isin(compared)]
    metrics = (
        metrics.drop(columns=["variant", "seed"])
        .merge(runs[["run_id", "variant", "seed"]], on="run_id")
        .sort_values("row_order")
    )
    is_final = metrics["step"].isna()
    # A re-recorded final metric replaces the earlier row rather than counting twice.
    ladder = metrics[is_final].drop_duplicates(["run_id", "metric"], keep="last")
    finals = ladder[ladder["run_id"].isin(compared)]
    points = points[points["run_id"].isin(finished)].merge(
        runs[["run_id", "variant", "seed"]], on="run_id")
    return SuiteData(
        runs=runs,
        finals=finals.reset_index(drop=True),
        curves=metrics[~is_final].reset_index(drop=True),
        points=points.reset_index(drop=True),
        ladder=ladder.reset_index(drop=True),
        references=references,
        root=index_path.parent,
    )


def _shown_states(index_path: Path, suite: str, runs: pd.DataFrame) -> list[str]:
    """Each run's state as every command shows it (`bench.execution.cluster.shown_states`): a run
    the index records as running whose holder is gone is 'interrupted'. A run whose folder is not
    beside the index (an index read on its own) keeps the state the index records."""
    from bench.execution.cluster import shown_states
    from bench.store.runs import Store

    store = Store(index_path.parent)
    recorded = list(zip(runs["run_id"], runs["state"], strict=True))
    looked = [(suite, run_id, state) for run_id, state in recorded
              if state != FINISHED and store.run_dir(suite, run_id).is_dir()]
    shown = {run_id: word for (_, run_id, _), (word, _) in
             zip(looked, shown_states(store, looked), strict=True)}
    return [shown.get(run_id, state) for run_id, state in recorded]


def _budget(config: dict) -> tuple[str | None, float]:
    """The unit and amount of a run's budget, from its resolved config (None and NaN where it
    names none)."""
    try:
        budget = BudgetConfig.model_validate(config.get("budget"))
        return budget.unit, budget.amount
    except ValueError:  # no budget (a ValidationError), or a ladder's list
        return None, math.nan


def variant_order(declared: Sequence[str], data: SuiteData, references: Sequence[str] = ()
                  ) -> list[str]:
    """The suite's variant order, then any variant in the index that the suite no longer names;
    each by the name it is shown by (the suite's `references` marked before any of their runs
    is recorded)."""
    shown = [data.shown(v, references) for v in declared]
    extra = sorted(set(data.runs["variant"]) - set(shown))
    return [*shown, *extra]


def json_object(text: str | None, column: str, run_id: str) -> dict:
    """A JSON-object column of the index (runs.provenance, runs.config); {} when empty."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"runs.{column} of run {run_id}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise UserError(f"runs.{column} of run {run_id}: expected a JSON object")
    return value
