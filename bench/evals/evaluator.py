"""The evaluator contract: what an evaluator declares, what it is given and what it returns.

An evaluator is one module under `bench/evals/` with one line in `bench.evals.registry`. It
declares the config a suite gives it (`config_model`), the adapter protocol it scores a model
through (`needs`, from `bench.evals.adapters`), the files it reads (`inputs`, for the run's
identity; `check`, before training) and how it turns the model into metrics and curves
(`evaluate`). It never imports a
family: a family hands it an adapter, and the run context records what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel

from bench.evals.curves import Curve


@dataclass(frozen=True)
class EvalSetting:
    """What an evaluation knows of the run it scores."""

    workdir: Path  # the evaluator's own folder (`<run>/<name>/`): outputs, resumable state
    log: logging.Logger
    seed: int = 0  # the run's seed, for evaluations that train (GLUE fine-tuning)
    data_root: str | None = None  # the run's training data folder (see Family.data_root)
    progress: bool = True  # show progress bars


@dataclass
class EvalResult:
    """Metrics (named without the evaluator's prefix: 'acc', 'single.easy'), curves by name,
    per-example rows for paired tests ('' -> samples_<name>.jsonl, 'x' -> samples_<name>_x.jsonl)
    and what the run's provenance should say of the evaluation."""

    metrics: dict[str, float]
    curves: dict[str, Curve] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PerExample:
    """How a metric follows from the per-example rows its evaluation writes, so that two runs
    scored on the same examples can be compared example by example (a paired test resamples
    the examples, and counts discordant ones where the metric is a share of correct ones)."""

    samples: str  # the rows' key in `EvalResult.samples` ('' for the evaluation's one file)
    key: tuple[str, ...]  # the fields that name an example
    fields: tuple[str, ...]  # the fields an example contributes, in order
    aggregate: Callable[[np.ndarray], float]  # the metric of a (examples, numbers) array
    # for a share of correct examples: which are (McNemar's test counts them); None otherwise
    correct: Callable[[np.ndarray], np.ndarray] | None = None
    only: tuple[str, str] | None = None  # only the rows whose field (first) holds this value
    # an example's numbers from its fields' values, where those are not one number each (an
    # image's detections as counts at each score threshold); None: each field is a number
    expand: Callable[[Sequence[Any]], np.ndarray] | None = None
    # `aggregate` reads its array only through the column sums (counts summed over images),
    # so a resample's metric is that of one row of weighted sums: a matrix product per
    # resample instead of a copy of every example's numbers
    summed: bool = False

    def numbers(self, row: Mapping[str, Any]) -> np.ndarray:
        """The numbers `row` contributes (KeyError, TypeError or ValueError where it lacks a
        field or holds a value of the wrong kind)."""
        values = [row[f] for f in self.fields]
        if self.expand is not None:
            return np.asarray(self.expand(values), dtype=np.float64)
        return np.asarray([float(v) for v in values], dtype=np.float64)


# An evaluator's config model and the adapter protocol it scores through: its methods take them.
C = TypeVar("C", bound=BaseModel)
A = TypeVar("A")


class Evaluator(Protocol[C, A]):
    """One evaluation protocol, usable by any family whose models provide what it `needs`;
    typed by its config model `C` and adapter `A` (a module declares `EVALUATOR:
    Evaluator[ItsConfig, ItsAdapter]`; the registry hands out `Evaluator[Any, Any]`)."""

    name: str

    @property
    def config_model(self) -> type[C]:
        """The schema of the evaluator's entry in a suite's `evals:`."""
        ...

    @property
    def needs(self) -> type[A]:
        """The adapter protocol a model must provide (bench.evals.adapters)."""
        ...

    def higher_is_better(self, metric: str) -> bool | None:
        """Whether a larger value of `metric` (without the prefix) is better; None: neither."""
        ...

    def metrics(self, config: C) -> list[str]:
        """Every metric `evaluate` records for `config` (without the `<name>.` prefix): what a
        suite's report may name."""
        ...

    def is_proxy(self, config: C) -> bool:
        """Whether the evaluation scores a stand-in data set, not the benchmark itself (a
        report labels its metrics so, and says not to compare them with published numbers)."""
        ...

    def per_example(self, metric: str) -> PerExample | None:
        """How `metric` (without the prefix) follows from the evaluation's per-example rows;
        None where it does not (a metric of the whole set, or rows that do not hold it)."""
        ...

    def inputs(self, config: C, data_root: str | None) -> dict[str, str]:
        """The files and folders the evaluation reads, by label ('path', 'images'); the run
        names them `evals.<name>.<label>` and their contents join its identity."""
        ...

    def check(self, config: C, data_root: str | None) -> None:
        """Fail (a UserError naming the file) when the evaluation's data is missing or
        malformed: the run checks before it trains, not after hours of training."""
        ...

    def evaluate(self, config: C, model: A, setting: EvalSetting) -> EvalResult:
        """Score `model` (an instance of `needs`) by the protocol."""
        ...
