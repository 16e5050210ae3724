"""Paired tests over examples: a variant against the baseline where both were scored on the same
examples, from the per-example rows their evaluation wrote (`Evaluator.per_example` says how a
metric follows from them). With the demo's two seeds a t-interval over seeds has one degree of
freedom; the hundreds of examples each run scored answer sharply whether the two differ on
these examples.

Which test, and why:
- **A share of correct examples** (an accuracy): McNemar's exact test. Only the discordant
  examples (right in one run, wrong in the other) carry information; under no difference either
  kind is equally likely, so their split is tested against a fair coin (the two-sided binomial
  test). Seeds are strata: the variant's run of seed s is paired with the baseline's run of seed
  s (the same data order and initialisation), and the discordant counts of all seeds are added,
  which is the Mantel-Haenszel test for matched pairs. Adding them treats an example's pairs in
  two seeds as two pairs, so the test speaks of these runs on these examples; the seed-level
  test beside it speaks of new seeds.
- **Any other metric** (a perplexity, F1, MCC, a correlation): a paired bootstrap over examples.
  The examples are resampled with replacement, the same ones for both variants and for every
  seed, and the metric's difference is averaged over the seeds; its 95% percentile interval and
  two-sided p (twice the smaller share of resampled differences on either side of 0, each share
  counted as (k + 1) / (R + 1)) come from RESAMPLES resamples of a generator seeded with 0, so a
  report is reproducible. Resampling examples, not seeds, keeps an example's correlation across
  seeds: an example that is hard for every seed is drawn for all of them together.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.evals.evaluator import PerExample
from bench.evals.registry import get_evaluator, known_evaluators
from bench.report.suite_data import SuiteData
from bench.store.folder import Unreadable, read_samples, samples_file
from bench.store.queries import FINISHED

RESAMPLES = 2000
# A bootstrap draws the resampled indices in chunks of this many resamples (memory bounded by
# the chunk, not by RESAMPLES x examples).
_CHUNK = 100
COLUMNS = ["example_test", "example_seeds", "examples", "example_diff", "example_low",
           "example_high", "example_p", "discordant_better", "discordant_worse"]


@dataclass(frozen=True)
class PairedTest:
    """`variant` minus the baseline on `metric` over the examples both scored: the test used,
    the seeds paired, the examples per seed, the difference (mean over seeds), its bootstrap
    interval (NaN under McNemar), the two-sided p, and McNemar's discordant counts (examples
    the variant got right and the baseline wrong, and the reverse; 0 for a bootstrap)."""

    test: str
    seeds: int
    examples: int
    diff: float
    low: float
    high: float
    p: float
    better: int = 0
    worse: int = 0


def mcnemar_p(better: int, worse: int) -> float:
    """McNemar's exact two-sided p from the discordant counts (1 without any)."""
    n = better + worse
    return 1.0 if n == 0 else float(stats.binomtest(better, n, 0.5).pvalue)


def mcnemar(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> PairedTest:
    """McNemar's test over seeds' pairs of correct-example masks (variant, baseline), the
    discordant pairs of all seeds added (Mantel-Haenszel for matched pairs)."""
    better = sum(int(np.sum(a & ~b)) for a, b in pairs)
    worse = sum(int(np.sum(~a & b)) for a, b in pairs)
    n = len(pairs[0][0])
    diff = float(np.mean([a.mean() - b.mean() for a, b in pairs]))
    return PairedTest("McNemar", len(pairs), n, diff, math.nan, math.nan,
                      mcnemar_p(better, worse), better, worse)


def paired_bootstrap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], per: PerExample,
                     resamples: int = RESAMPLES) -> PairedTest:
    """The paired bootstrap over examples of seeds' (variant, baseline) arrays of per-example
    fields, aligned by example (see the module's docstring)."""
    n = len(pairs[0][0])

    def difference(idx: np.ndarray) -> float:
        return float(np.mean([per.aggregate(a[idx]) - per.aggregate(b[idx]) for a, b in pairs]))

    diff = difference(np.arange(n))
    rng = np.random.default_rng(0)
    draws: list[float] = []
    while len(draws) < resamples:
        chunk = rng.integers(0, n, size=(min(_CHUNK, resamples - len(draws)), n))
        draws += [difference(idx) for idx in chunk]
    d = np.asarray(draws)
    finite = d[np.isfinite(d)]
    if finite.size < d.size:  # a resample where a metric is undefined (MCC of one class)
        return PairedTest("paired bootstrap", len(pairs), n, diff, math.nan, math.nan, math.nan)
    low, high = np.percentile(d, [2.5, 97.5])
    below, above = (np.sum(d <= 0) + 1) / (resamples + 1), (np.sum(d >= 0) + 1) / (resamples + 1)
    return PairedTest("paired bootstrap", len(pairs), n, diff, float(low), float(high),
                      float(min(1.0, 2 * min(below, above))))


def paired_test(pairs: Sequence[tuple[np.ndarray, np.ndarray]], per: PerExample) -> PairedTest:
    """McNemar's test for a share of correct examples, else the paired bootstrap."""
    if per.correct is not None:
        return mcnemar([(per.correct(a).astype(bool), per.correct(b).astype(bool))
                        for a, b in pairs])
    return paired_bootstrap(pairs, per)


def per_example_of(metric: str) -> PerExample | None:
    """How a report metric (`<evaluator>.<name>`) follows from per-example rows, if it does."""
    evaluator, _, name = metric.partition(".")
    if evaluator not in known_evaluators():
        return None
    return get_evaluator(evaluator).per_example(name)


def samples_of(folder: Path, evaluator: str, per: PerExample) -> list[dict[str, Any]] | None:
    """The per-example rows a run wrote for `per`'s file of `evaluator`; None where it wrote
    none, or they cannot be read."""
    name = f"{evaluator}_{per.samples}" if per.samples else evaluator
    if not (folder / samples_file(name)).is_file():
        return None
    try:
        return read_samples(folder, name)
    except Unreadable:
        return None


def example_arrays(rows: list[dict[str, Any]], per: PerExample
                   ) -> tuple[list[tuple[Any, ...]], np.ndarray] | None:
    """A run's examples (their keys, sorted) and their fields as an (examples, fields) array,
    from its per-example `rows`; None where a row lacks a field or an example repeats."""
    chosen = [r for r in rows if per.split is None or r.get("split") == per.split]
    try:
        keyed = sorted((tuple(r[k] for k in per.key), [float(r[f]) for f in per.fields])
                       for r in chosen)
    except (KeyError, TypeError, ValueError):
        return None
    keys = [k for k, _ in keyed]
    if not keys or len(set(keys)) != len(keys):
        return None
    return keys, np.asarray([v for _, v in keyed], dtype=np.float64).reshape(len(keys), -1)


def example_tests(data: SuiteData, variants: Sequence[str], metrics: Sequence[str],
                  baseline: str | None) -> pd.DataFrame:
    """Per variant and metric (rows indexed so), the paired test over examples against the
    baseline (COLUMNS), where both finished a seed whose runs scored the same examples; the
    others have no row."""
    rows = []
    if baseline is None:
        return pd.DataFrame(columns=["variant", "metric", *COLUMNS]).set_index(
            ["variant", "metric"])
    runs = data.runs[(data.runs["state"] == FINISHED) & data.runs["compared"]]
    root = data.root
    folders = {} if root is None else {(str(r.variant), int(r.seed)): root / r.suite / r.run_id
                                       for r in runs.itertuples()}
    files: dict[tuple[Path, str, str], list[dict[str, Any]] | None] = {}  # each read once
    cache: dict[tuple[Path, str], Any] = {}

    def arrays(folder: Path, metric: str, per: PerExample) -> Any:
        if (folder, metric) not in cache:
            evaluator = metric.partition(".")[0]
            read = (folder, evaluator, per.samples)
            if read not in files:
                files[read] = samples_of(folder, evaluator, per)
            own = files[read]
            cache[folder, metric] = None if own is None else example_arrays(own, per)
        return cache[folder, metric]

    for metric in metrics:
        per = per_example_of(metric)
        if per is None:
            continue
        for variant in variants:
            if variant == baseline:
                continue
            pairs = []
            for (v, seed), folder in sorted(folders.items()):
                if v != variant or (baseline, seed) not in folders:
                    continue
                own, base = arrays(folder, metric, per), arrays(folders[baseline, seed],
                                                                metric, per)
                if own is None or base is None or own[0] != base[0]:  # not the same examples
                    continue
                pairs.append((own[1], base[1]))
            if pairs:
                t = paired_test(pairs, per)
                rows.append({"variant": variant, "metric": metric, "example_test": t.test,
                             "example_seeds": t.seeds, "examples": t.examples,
                             "example_diff": t.diff, "example_low": t.low,
                             "example_high": t.high, "example_p": t.p,
                             "discordant_better": t.better, "discordant_worse": t.worse})
    return pd.DataFrame(rows, columns=["variant", "metric", *COLUMNS]).set_index(
        ["variant", "metric"])
