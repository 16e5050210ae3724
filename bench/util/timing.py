"""Timing that survives a busy machine: warm-up, repeats, interleaving, median and spread.

One wall-clock measurement is at the mercy of whatever else runs. Every timed metric of the
harness is therefore a summary of several: the configurations compared (input sizes, single scale
vs pyramid, models) are timed in interleaved rounds, so a burst of load falls on all of them
alike; untimed warm-up rounds come first (allocator, kernel selection, caches); the median is
reported with its interquartile range and the number of repeats, as `<name>`, `<name>.iqr` and
`<name>.n`.
"""

import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class Timing:
    """The summary of repeated measurements (any unit): median, quartiles, extremes, count."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def metrics(self, name: str) -> dict[str, float]:
        """`name` (the median), `name.iqr` and `name.n`, as a run records them."""
        return dict(zip(self.names(name), (self.median, self.iqr, float(self.n)), strict=True))

    @staticmethod
    def names(name: str) -> tuple[str, str, str]:
        """The names `metrics(name)` records."""
        return name, f"{name}.iqr", f"{name}.n"


def summarize(samples: Sequence[float]) -> Timing:
    """Median, quartiles (inclusive method: they stay within the samples), min, max and count;
    NaN everywhere for no samples."""
    if not samples:
        return Timing(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    q1, q3 = samples[0], samples[0]
    if len(samples) > 1:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Timing(statistics.median(samples), q1, q3, min(samples), max(samples), len(samples))


def timed(call: Callable[[], Any], sync: Callable[[], None] = lambda: None,
          clock: Callable[[], float] = time.perf_counter) -> tuple[Any, float]:
    """`call()`'s result and the milliseconds it took, with queued device work (a GPU) waited
    for by `sync` before the clock starts and before it stops."""
    sync()
    start = clock()
    result = call()
    sync()
    return result, 1000 * (clock() - start)


def interleaved(tasks: Mapping[Key, Callable[[], Any]], *, warmup: int, repeats: int,
                sync: Callable[[], None] = lambda: None,
                clock: Callable[[], float] = time.perf_counter) -> dict[Key, Timing]:
    """Milliseconds per call of each task, timed in rounds that call every task once.

    `warmup` untimed rounds come first, then `repeats` timed ones; round r starts at task
    r mod len(tasks), so no task always runs right after the same other one. `sync` waits for
    queued device work (a GPU), before the clock starts and before it stops.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"timing needs repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    keys = list(tasks)
    samples: dict[Key, list[float]] = {k: [] for k in keys}
    for r in range(warmup + repeats):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            _, ms = timed(tasks[key], sync, clock)
            if r >= warmup:
                samples[key].append(ms)
    return {k: summarize(v) for k, v in samples.items()}


def step_rate(rows: Sequence[Mapping[str, Any]], *, warmup: int = 5) -> Timing:
    """Items per second of each training step after the first `warmup`, from one stage's curve
    rows (one per step from the first: cumulative training `wall` seconds and `tokens`, which
    count the stage's items, images included).

    A step's rate is its items over its seconds; the early steps (allocation, kernel choice,
    caches) are left out. The first step after a resume is a warm-up too, but the rows do not
    mark it; the median is not moved by a few such steps.
    """
    previous = [{"wall": 0.0, "tokens": 0}, *rows][: len(rows)]
    rates = [(row["tokens"] - before["tokens"]) / (row["wall"] - before["wall"])
             for before, row in list(zip(previous, rows, strict=True))[warmup:]
             if row["wall"] > before["wall"]]
    return summarize(rates)
