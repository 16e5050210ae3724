"""Several suites as one (`bench compare`): their variants side by side under `<suite>/<variant>`,
each with its own runs, data and budget, in one report or table. Scores are compared only where
the suites evaluated the same data: an evaluation input (`evals.<name>.<label>` of a run's
provenance) whose contents differ between the suites is refused, naming it, unless asked."""

from collections.abc import Sequence

import pandas as pd

from bench.errors import UserError
from bench.report.spec import ReportSpec
from bench.report.suite_data import SuiteData, json_object

# The inputs whose contents must agree for two suites' scores to be compared: the evaluators'
# data and the held-out text the validation losses are measured on.
EVALUATION_INPUTS = ("evals.", "data.val")
# The inputs a suite's runs train on, named in the combined report's notes.
TRAINING_INPUTS = ("data.train", "data.path", "data.images", "data.corpus")


def shown_name(suite: str, variant: str) -> str:
    """A variant of one of several suites, as the combined report names it."""
    return f"{suite}/{variant}"


def combine(parts: Sequence[tuple[ReportSpec, SuiteData]], baseline: str | None = None,
            allow_different_data: bool = False) -> tuple[ReportSpec, SuiteData]:
    """The suites of `parts` as one: the report of the first, over every suite's variants that
    have runs (the first's metrics, then any other's), its baseline the first suite's unless
    `baseline` (`<suite>/<variant>`) names another."""
    if len(parts) < 2:
        raise UserError("bench compare: give at least two suites")
    names = [spec.suite for spec, _ in parts]
    if len(set(names)) != len(names):
        raise UserError(f"bench compare: suite {_repeated(names)!r} is given twice")
    units = {spec.item_unit for spec, _ in parts}
    if len(units) > 1:
        raise UserError("bench compare: the suites count their training data in different "
                        f"units ({', '.join(sorted(units))}): different families")
    if not allow_different_data:
        _check_same_evaluation_data(parts)
    first = parts[0][0]
    # a suite's variants that ran (a copy trained again for one variant brings that one)
    variants = [shown_name(spec.suite, v) for spec, data in parts for v in spec.variants
                if data.shown(v, spec.references) in set(data.runs["variant"])]
    chosen = baseline or (shown_name(first.suite, first.baseline) if first.baseline else None)
    if chosen is not None and chosen not in variants:
        raise UserError(f"--baseline {chosen}: not one of the compared variants "
                        f"({', '.join(variants)})")
    metrics = list(dict.fromkeys(m for spec, _ in parts for m in spec.metrics))
    spec = ReportSpec(
        suite="-vs-".join(names),
        title=" vs ".join(dict.fromkeys(spec.title for spec, _ in parts)),
        baseline=chosen,
        metrics=metrics,
        higher_is_better={k: v for spec, _ in reversed(parts)
                          for k, v in spec.higher_is_better.items()},
        reference={shown_name(spec.suite, v): numbers for spec, _ in parts
                   for v, numbers in spec.reference.items()},
        reference_source=first.reference_source,
        notes=[f"Compared suites: {', '.join(names)}. Each variant is named "
               "<suite>/<variant> and keeps its own runs, data and budget."]
        + [f"{spec.suite} trained on {', '.join(paths)}." for spec, data in parts
           if (paths := sorted({str(e.get("path")) for label, e in _inputs(data)
                                if label.startswith(TRAINING_INPUTS)}))]
        + [f"{spec.suite}: {note}" for spec, _ in parts for note in spec.notes],
        curve=first.curve,
        item_unit=first.item_unit,
        proxies=sorted({p for spec, _ in parts for p in spec.proxies}),
        variants=variants,
        references=[shown_name(spec.suite, v) for spec, _ in parts for v in spec.references],
    )
    return spec, _joined([(spec.suite, data) for spec, data in parts])


def _joined(parts: Sequence[tuple[str, SuiteData]]) -> SuiteData:
    """The suites' rows as one suite's, every variant renamed `<suite>/<variant>`."""
    def frame(pick: str) -> pd.DataFrame:
        frames = []
        for suite, data in parts:
            rows = getattr(data, pick).copy()
            if "variant" in rows:
                rows["variant"] = [shown_name(suite, v) for v in rows["variant"]]
            frames.append(rows)
        return pd.concat(frames, ignore_index=True)

    roots = {data.root for _, data in parts}
    return SuiteData(
        runs=frame("runs"), finals=frame("finals"), curves=frame("curves"),
        points=frame("points"), ladder=frame("ladder"),
        references={shown_name(suite, k): shown_name(suite, v) for suite, data in parts
                    for k, v in data.references.items()},
        root=roots.pop() if len(roots) == 1 else None)


def _check_same_evaluation_data(parts: Sequence[tuple[ReportSpec, SuiteData]]) -> None:
    """Refuse suites whose runs evaluated different contents under the same input label."""
    seen: dict[str, tuple[str, str, str]] = {}  # label -> (sha256, path, suite)
    for spec, data in parts:
        for label, entry in _inputs(data):
            if not label.startswith(EVALUATION_INPUTS):
                continue
            sha, path = str(entry.get("sha256")), str(entry.get("path"))
            first = seen.setdefault(label, (sha, path, spec.suite))
            if first[0] != sha:
                raise UserError(
                    f"bench compare: {label} differs: suite {first[2]} evaluated {first[1]} "
                    f"(sha256 {first[0][:12]}), suite {spec.suite} {path} (sha256 "
                    f"{sha[:12]}); their scores are on different data. "
                    "--allow-different-data compares them anyway")


def _repeated(names: Sequence[str]) -> str:
    return next(n for n in names if names.count(n) > 1)


def _inputs(data: SuiteData) -> list[tuple[str, dict]]:
    """Every input (label, its path and sha256) the suite's runs recorded in provenance."""
    found = []
    for run_id, text in zip(data.runs["run_id"], data.runs["provenance"], strict=True):
        inputs = json_object(text if isinstance(text, str) else None, "provenance",
                             str(run_id)).get("inputs", {})
        if isinstance(inputs, dict):
            found += [(label, entry) for label, entry in inputs.items()
                      if isinstance(entry, dict)]
    return found
