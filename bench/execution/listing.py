"""`bench ls`: the runs of a results store as one frame, each in the state every command shows
(`cluster.shown_states`), with its budget and chosen final metrics; or one row per variant and
budget with the means over its finished seeds."""

import fnmatch
import json
import math
from dataclasses import dataclass

import pandas as pd

from bench.errors import UserError, did_you_mean
from bench.evals.registry import known_evaluators
from bench.execution.cluster import shown_states
from bench.store.runs import Store

# Every word a run's state is shown by (`cluster.view`).
STATES = ("finished", "running", "interrupted", "queued", "starting", "failed", "pruned",
          "unreadable", "pending")
# The columns a run's row starts with, before its metrics.
RUN_COLUMNS = ["run_id", "suite", "variant", "seed", "unit", "budget", "state", "detail",
               "started", "ended"]


@dataclass(frozen=True)
class Listing:
    """The runs listed (one row each: RUN_COLUMNS, then a column per metric, NaN where a run
    did not record it), the metrics shown in order, and each listed run's shown metrics that it
    recorded (a NaN there is a value it recorded)."""

    runs: pd.DataFrame
    metrics: list[str]
    recorded: list[dict[str, float]]


def list_runs(store: Store, suite: str | None = None, states: list[str] | None = None,
              metrics: list[str] | None = None) -> Listing:
    """The store's runs, newest first: those in `states` (all when None), with the final
    metrics `metrics` names (names or shell patterns such as `lambada.*`; the headline metrics
    when None)."""
    for state in states or []:
        if state not in STATES:
            raise UserError(f"--state {state}: not a state a run is shown in"
                            f"{did_you_mean(state, STATES)}; states: {', '.join(STATES)}")
    recorded = store.runs(suite)
    words = shown_states(store, [(r["suite"], r["run_id"], r["state"]) for r in recorded])
    rows = []
    for run, (state, detail) in zip(recorded, words, strict=True):
        if states is not None and state not in states:
            continue
        unit, amount = budget_of(run["budget"])
        rows.append({"run_id": run["run_id"], "suite": run["suite"], "variant": run["variant"],
                     "seed": run["seed"], "unit": unit, "budget": amount, "state": state,
                     "detail": detail or run["reason"] or "", "started": run["started"],
                     "ended": run["ended"], **run["metrics"]})
    names = sorted({k for run in recorded for k in run["metrics"]})
    shown = chosen_metrics(names, metrics)
    frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *shown])
    return Listing(frame, shown, [{m: row[m] for m in shown if m in row} for row in rows])


def budget_of(text: str | None) -> tuple[str | None, float]:
    """The unit and amount of a budget as a run's config holds it (`{"flops": 4e12}`, with a
    `split` where it has stages); None and NaN for a reference variant's run."""
    try:
        budget = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None, math.nan
    if not isinstance(budget, dict):
        return None, math.nan
    for unit, amount in budget.items():
        if unit != "split" and isinstance(amount, int | float):
            return unit, float(amount)
    return None, math.nan


def chosen_metrics(names: list[str], asked: list[str] | None) -> list[str]:
    """The metrics `asked` names, in its order (a pattern's matches sorted), each recorded by a
    listed run; or, asked nothing, the headline metrics: each evaluator's and the validation
    losses, not their stderr or counts (a training run's own records, `train.*`, `model.*`, and
    a family's, are asked by name)."""
    if asked is None:
        evaluators = {*known_evaluators(), "val"}
        return [n for n in names if n.partition(".")[0] in evaluators
                and not n.endswith(("_stderr", ".n"))]
    chosen: list[str] = []
    for pattern in asked:
        matched = sorted(fnmatch.filter(names, pattern))
        if not matched:
            raise UserError(f"--metric {pattern}: no listed run recorded it"
                            f"{did_you_mean(pattern, names)}")
        chosen += [m for m in matched if m not in chosen]
    return chosen


def by_variant(listing: Listing) -> pd.DataFrame:
    """One row per suite, variant and budget (in that order): its runs, how many finished, and
    each metric's mean over the finished ones (the other runs enter no mean)."""
    runs = listing.runs.assign(finished=listing.runs["state"] == "finished")
    keys = ["suite", "variant", "unit", "budget"]
    grouped = runs.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(runs=("run_id", "size"), finished=("finished", "sum")).reset_index()
    done = runs[runs["finished"]]
    means = done.groupby(keys, dropna=False, sort=False)[listing.metrics].mean().reset_index()
    return table.merge(means, on=keys, how="left").sort_values(
        ["suite", "variant", "budget"], kind="stable", ignore_index=True)
