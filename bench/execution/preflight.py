"""What every planned run needs before it can start, checked before any run is claimed, trained
or submitted: its inputs exist, and each evaluator finds its data (`Evaluator.check`). A suite
whose data is missing then fails at once, naming every problem, instead of run by run after each
claim or, on a cluster, after each job's wait in the queue."""

from collections.abc import Iterable

from bench.config.suite import Suite
from bench.contract import RunSpec
from bench.errors import UserError
from bench.evals.registry import get_evaluator
from bench.store.index import json_column
from bench.tracking.registry import not_installed
from bench.util.fingerprint import missing


def missing_inputs(runs: list[RunSpec]) -> list[str]:
    """A line for each input that is not there (its fingerprint is `MISSING`), naming the
    variants that read it."""
    return _lines((f"input {label}: {run.inputs[label]['path']} not found", run.variant.name)
                  for run in runs for label in missing(run.inputs))


def preflight(suite: Suite, runs: list[RunSpec]) -> None:
    """Raise one UserError naming every missing input and every evaluator's refusal among the
    runs' variants, and every tracker named whose package is not installed. An evaluator whose
    own inputs are missing is not asked (its input says it)."""
    refusals: list[tuple[str, str]] = []
    said: dict[tuple[str, str, str | None], str] = {}  # what each evaluator config said
    for run in runs:
        data_root = suite.family.data_root(run.config)
        for name, cfg in run.variant.evals:
            if any(label.startswith(f"evals.{name}.") for label in missing(run.inputs)):
                continue
            key = (name, json_column(cfg.model_dump(mode="json")), data_root)
            if key not in said:
                try:
                    get_evaluator(name).check(cfg, data_root)
                    said[key] = ""
                except UserError as err:
                    said[key] = f"{name}: {err}"
            if said[key]:
                refusals.append((said[key], run.variant.name))
    problems = missing_inputs(runs) + _lines(refusals) + not_installed(suite.head.tracking)
    if problems:
        raise UserError(f"{len(problems)} problem{'s' * (len(problems) > 1)} before any run "
                        "starts; nothing was run or submitted:\n  " + "\n  ".join(problems))


def _lines(found: Iterable[tuple[str, str]]) -> list[str]:
    """Each problem once, in the order first met, with the variants it stops."""
    variants: dict[str, list[str]] = {}
    for problem, variant in found:
        if variant not in variants.setdefault(problem, []):
            variants[problem].append(variant)
    return [f"{problem} (variant{'s' * (len(names) > 1)} {', '.join(names)})"
            for problem, names in variants.items()]
