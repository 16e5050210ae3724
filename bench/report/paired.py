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
- **A metric of sums over examples** (a WIDER FACE AP: each image adds its counts at 1000 score
  thresholds; an FDDB TPR: its counts at each distinct score of the set): the same bootstrap,
  the examples' numbers held sparse and a resample's sums computed as how often it drew each
  example times them, which gives the same numbers as the drawn rows copied (tested) without
  copying an image's thousands of numbers per draw.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from scipy import sparse, stats

from bench.evals.evaluator import PerExample
from bench.evals.registry import get_evaluator, known_evaluators
from bench.report.suite_data import SuiteData
from bench.store.folder import Unreadable, read_samples, samples_file
from bench.store.queries import FINISHED

RESAMPLES = 2000
# A bootstrap draws the resampled indices in chunks of this many resamples (memory bounded by
# the chunk, not by RESAMPLES x examples).
_CHUNK = 100
_SUM_CELLS = 2**22  # a summed bootstrap's resampled sums at a time: 32 MiB of floats per run
# an (examples, numbers) array: sparse where the metric reads only the numbers' sums
Numbers: TypeAlias = "np.ndarray | sparse.csr_array"
# a run's examples (their keys, sorted) and their numbers
Examples = tuple[list[tuple[Any, ...]], Numbers]
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


def paired_bootstrap(pairs: Sequence[tuple[Numbers, Numbers]], per: PerExample,
                     resamples: int = RESAMPLES) -> PairedTest:
    """The paired bootstrap over examples of seeds' (variant, baseline) arrays of per-example
    numbers, aligned by example (see the module's docstring). Where the metric reads only the
    numbers' sums (`per.summed`: the arrays are sparse), a resample's sums are how often it drew
    each example times the array: the metric of the same resampled examples, without copying
    them."""
    n = pairs[0][0].shape[0]

    def difference(a: np.ndarray, b: np.ndarray) -> float:
        return per.aggregate(a) - per.aggregate(b)

    def differences(idx: np.ndarray) -> list[float]:
        """The difference, mean over seeds, of each resample (a row of `idx`)."""
        if not per.summed:
            return [float(np.mean([difference(a[i], b[i]) for a, b in pairs])) for i in idx]
        # resamples' sums of at most _SUM_CELLS numbers at a time (FDDB's are 3 per score)
        step = max(1, _SUM_CELLS // pairs[0][0].shape[1])
        out = []
        for start in range(0, len(idx), step):
            counts = np.stack([np.bincount(i, minlength=n)
                               for i in idx[start:start + step]]).astype(np.float64)
            sums = [(np.asarray(counts @ a), np.asarray(counts @ b)) for a, b in pairs]
            out += [float(np.mean([difference(sa[r:r + 1], sb[r:r + 1]) for sa, sb in sums]))
                    for r in range(len(counts))]
        return out

    diff = differences(np.arange(n)[None, :])[0]
    rng = np.random.default_rng(0)
    draws: list[float] = []
    while len(draws) < resamples:
        draws += differences(rng.integers(0, n, size=(min(_CHUNK, resamples - len(draws)), n)))
    d = np.asarray(draws)
    finite = d[np.isfinite(d)]
    if finite.size < d.size:  # a resample where a metric is undefined (MCC of one class)
        return PairedTest("paired bootstrap", len(pairs), n, diff, math.nan, math.nan, math.nan)
    low, high = np.percentile(d, [2.5, 97.5])
    below, above = (np.sum(d <= 0) + 1) / (resamples + 1), (np.sum(d >= 0) + 1) / (resamples + 1)
    return PairedTest("paired bootstrap", len(pairs), n, diff, float(low), float(high),
                      float(min(1.0, 2 * min(below, above))))


def paired_test(pairs: Sequence[tuple[Numbers, Numbers]], per: PerExample) -> PairedTest:
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


def samples_of(folder: Path, evaluator: str, samples: str) -> list[dict[str, Any]] | None:
    """The per-example rows a run wrote in `evaluator`'s file `samples` ('' for its one file);
    None where it wrote none, or they cannot be read."""
    name = f"{evaluator}_{samples}" if samples else evaluator
    if not (folder / samples_file(name)).is_file():
        return None
    try:
        return read_samples(folder, name)
    except Unreadable:
        return None


def example_arrays(rows: list[dict[str, Any]], per: PerExample
                   ) -> Examples | None:
    """A run's examples (their keys, sorted) and their numbers as an (examples, numbers) array,
    sparse where the metric reads only their sums (an image's counts at 1000 thresholds are
    mostly zeros); None where a row lacks a field, holds a value of the wrong kind, or an
    example repeats."""

    def numbers(row: dict[str, Any]) -> Numbers:
        values = per.numbers(row)
        return sparse.csr_array(values[None, :]) if per.summed else values

    chosen = [r for r in rows if per.only is None or r.get(per.only[0]) == per.only[1]]
    try:
        keyed = sorted(((tuple(r[k] for k in per.key), numbers(r)) for r in chosen),
                       key=lambda pair: pair[0])
    except (KeyError, TypeError, ValueError):
        return None
    keys, values = [k for k, _ in keyed], [v for _, v in keyed]
    if not keys or len(set(keys)) != len(keys) or len({v.shape[-1] for v in values}) != 1:
        return None
    return keys, sparse.vstack(values, format="csr") if per.summed else np.stack(values)


def example_tests(data: SuiteData, variants: Sequence[str], metrics: Sequence[str],
                  baseline: str | None) -> pd.DataFrame:
    """Per variant and metric (rows indexed so), the paired test over examples against the
    baseline (COLUMNS), where both finished a seed whose runs scored the same examples; the
    others have no row. Each run's file of rows is read once for all the metrics it scores
    and dropped once they are made arrays (a WIDER image's detections are thousands of numbers),
    so one run's rows are held at a time."""
    index = ["variant", "metric"]
    if baseline is None:
        return pd.DataFrame(columns=[*index, *COLUMNS]).set_index(index)
    runs = data.runs[(data.runs["state"] == FINISHED) & data.runs["compared"]]
    root = data.root
    folders = {} if root is None else {(str(r.variant), int(r.seed)): root / r.suite / r.run_id
                                       for r in runs.itertuples()}
    files: dict[tuple[str, str], list[tuple[str, PerExample]]] = {}  # metrics by file read
    for metric in metrics:
        per = per_example_of(metric)
        if per is not None:
            files.setdefault((metric.partition(".")[0], per.samples), []).append((metric, per))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for (evaluator, samples), scored in files.items():
        # a run's arrays for each layout of its rows, made once (FDDB's disc and cont TPRs,
        # or a GLUE task's accuracy and F1, read the same numbers)
        made: dict[tuple[Path, Any], Examples | None] = {}
        for folder in folders.values():
            own = samples_of(folder, evaluator, samples)
            for _, per in scored:
                if (folder, _layout(per)) not in made:
                    made[folder, _layout(per)] = None if own is None else example_arrays(own, per)
        for metric, per in scored:
            arrays = {folder: made[folder, _layout(per)] for folder in folders.values()}
            for variant in variants:
                test = _variant_test(folders, arrays, variant, baseline, per)
                if test is not None:
                    found[variant, metric] = {
                        "variant": variant, "metric": metric, "example_test": test.test,
                        "example_seeds": test.seeds, "examples": test.examples,
                        "example_diff": test.diff, "example_low": test.low,
                        "example_high": test.high, "example_p": test.p,
                        "discordant_better": test.better, "discordant_worse": test.worse}
    ordered = [found[v, m] for m in metrics for v in variants if (v, m) in found]
    return pd.DataFrame(ordered, columns=[*index, *COLUMNS]).set_index(index)


def _layout(per: PerExample) -> tuple[Any, ...]:
    """What `example_arrays` makes of a run's rows for `per`: rules alike here share arrays."""
    return per.key, per.fields, per.only, per.expand, per.summed


def _variant_test(folders: Mapping[tuple[str, int], Path],
                  arrays: Mapping[Path, Examples | None],
                  variant: str, baseline: str, per: PerExample) -> PairedTest | None:
    """`variant`'s test against the baseline over the seeds both finished on the same
    examples; None for the baseline itself or where no seed pairs."""
    if variant == baseline:
        return None
    pairs = []
    for (v, seed), folder in sorted(folders.items()):
        if v != variant or (baseline, seed) not in folders:
            continue
        own, base = arrays[folder], arrays[folders[baseline, seed]]
        if own is None or base is None or own[0] != base[0]:  # not the same examples
            continue
        pairs.append((own[1], base[1]))
    return paired_test(pairs, per) if pairs else None
