"""The numbers of a report: one suite's runs summarised over seeds (means with t-intervals,
differences from the baseline paired by seed or Welch with their p-values, the paper-style
table with ratios to the baseline) and the per-run frames the tables list.

Everything here is numeric (pandas frames, floats); formatting belongs to the section builders,
so the statistics can be tested against scipy without parsing HTML.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.suite_data import SuiteData, json_object
from bench.store.queries import FINISHED

STDERR_SUFFIX = "_stderr"
# A reference key `<metric>:ratio` is the paper's ratio of that metric to its baseline's.
RATIO_SUFFIX = ":ratio"


def consumed_metric_names(unit: str = "tokens") -> tuple[str, str, str]:
    """What a run consumed, as the training loop records it, in the family's unit of data
    (tokens, images); shown beside every variant's metrics."""
    return "train.flops", f"train.{unit}", f"train.{unit}_per_s"


def efficiency_metric_names(unit: str = "tokens") -> tuple[str, str, str, str]:
    """How efficiently a run trained, as the training loop records it: model FLOP/s, MFU
    (GPUs whose peak is known), the family's items per second and the device's peak memory
    (GPUs)."""
    return ("train.flops_per_s", "train.mfu", f"train.{unit}_per_s",
            "train.peak_memory_bytes")


LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% t-interval; low and high are NaN where no interval exists."""

    value: float
    low: float
    high: float


# Infinite and NaN values (and sums past the largest float) give infinite or NaN estimates,
# which the report prints as such; numpy is not to warn about them on the way.
def _quiet() -> np.errstate:
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


@_quiet()
def _overflow_safe(x: np.ndarray, stat: Callable[[np.ndarray], float], power: int) -> float:
    """stat(x), a statistic homogeneous of degree `power`; where finite values overflowed on
    the way (a diverged run's 1e308), stat of x over its largest magnitude, scaled back."""
    value = float(stat(x))
    if not math.isfinite(value) and np.isfinite(x).all():
        scale = float(np.abs(x).max())
        value = float(stat(x / scale))
        for _ in range(power):
            value *= scale
    return value


def mean_of(x: np.ndarray) -> float:
    """The mean of `x` (NaN when empty), without overflow for values near the largest float."""
    return _overflow_safe(x, np.mean, 1) if x.size else math.nan


def _std(x: np.ndarray) -> float:
    """The sample standard deviation (n - 1 degrees of freedom), as safe as `mean_of`."""
    return _overflow_safe(x, lambda v: v.std(ddof=1), 1)


def _var(x: np.ndarray) -> float:
    """The sample variance (n - 1 degrees of freedom), as safe as `mean_of`."""
    return _overflow_safe(x, lambda v: v.var(ddof=1), 2)


@_quiet()
def seed_interval(values: Sequence[float] | np.ndarray) -> Estimate:
    """Mean over seeds with a 95% t-interval (n - 1 degrees of freedom): seed variance."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    mean = mean_of(x)
    if x.size < 2:
        return Estimate(mean, math.nan, math.nan)
    half = stats.t.ppf(0.5 + LEVEL / 2, x.size - 1) * _std(x) / math.sqrt(x.size)
    return Estimate(mean, mean - half, mean + half)


@dataclass(frozen=True)
class Difference(Estimate):
    """A difference of means with its 95% interval, the two-sided p-value of its t-test, and
    which test that was ('paired' or 'Welch')."""

    test: str
    p: float


@_quiet()
def _t_difference(diff: float, se: float, df: float, test: str) -> Difference:
    """`diff` with a 95% t-interval of standard error `se` on `df` degrees of freedom."""
    if se == 0:
        return _exact(diff, test)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Difference(diff, diff - half, diff + half, test, p)


def _exact(diff: float, test: str) -> Difference:
    """A difference without spread (every seed gave the same difference, or each side the same
    value): its interval is the difference itself, and the t-test, which divides by the spread,
    has no p (NaN). `no_spread` tells such a difference."""
    return Difference(diff, diff, diff, test, math.nan)


def no_spread(low: float, high: float) -> bool:
    """Whether an interval is a single point: the difference of seeds that all agree."""
    return math.isfinite(low) and low == high


@_quiet()
def _constant(x: np.ndarray) -> bool:
    """Whether every value is the same finite number: compared exactly, since the mean of equal
    values can differ from them in the last bit and leave a spread of rounding error."""
    return bool(np.isfinite(x).all() and np.ptp(x) == 0)


def welch_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
                     ) -> Difference:
    """mean(a) - mean(b) with a 95% Welch t-interval (unequal variances, Welch-Satterthwaite df)
    and Welch's t-test: for runs that no seed pairs."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return Difference(math.nan, math.nan, math.nan, "Welch", math.nan)
    with _quiet():
        diff = mean_of(x) - mean_of(y)
        if x.size < 2 or y.size < 2:
            return Difference(diff, math.nan, math.nan, "Welch", math.nan)
        if _constant(x) and _constant(y):
            return _exact(float(x[0] - y[0]), "Welch")
        vx, vy = np.float64(_var(x) / x.size), np.float64(_var(y) / y.size)
        df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)) if vx + vy else 1.0
        return _t_difference(diff, float(np.sqrt(vx + vy)), float(df), "Welch")


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
                      ) -> Difference:
    """mean(a - b) over pairs with a 95% t-interval on n - 1 df and the paired t-test: for
    runs paired by seed, which share their data order and initialisation, so the seed's own
    luck cancels out of each difference."""
    with _quiet():
        d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return Difference(math.nan, math.nan, math.nan, "paired", math.nan)
    diff = mean_of(d)
    if d.size < 2:
        return Difference(diff, math.nan, math.nan, "paired", math.nan)
    if _constant(d):
        return _exact(float(d[0]), "paired")
    return _t_difference(diff, _std(d) / math.sqrt(d.size), d.size - 1, "paired")


def seed_difference(data: SuiteData, variant: str, baseline: str, metric: str) -> Difference:
    """`variant` minus `baseline` on `metric`: paired by seed when both finished the same seeds
    (at least two), else Welch over whatever each finished."""
    a, b = _by_seed(data, variant, metric), _by_seed(data, baseline, metric)
    if len(a) >= 2 and list(a.index) == list(b.index):
        return paired_difference(a.to_numpy(), b.to_numpy())
    return welch_difference(a.to_numpy(), b.to_numpy())


def _by_seed(data: SuiteData, variant: str, metric: str) -> pd.Series:
    """One value per finished seed of a variant, indexed and ordered by seed."""
    rows = data.finals[(data.finals["variant"] == variant) & (data.finals["metric"] == metric)]
    return rows.sort_values("seed").set_index("seed")["value"].astype(float)


def seed_values(data: SuiteData, variant: str, metric: str) -> np.ndarray:
    """One value per finished seed of a variant, in seed order."""
    return _by_seed(data, variant, metric).to_numpy()


def summary_table(
    data: SuiteData,
    variants: Sequence[str],
    metrics: Sequence[str],
    baseline: str | None,
    reference: dict[str, dict[str, float]],
) -> pd.DataFrame:
    """One row per (variant, metric): seed mean and interval, eval stderr, delta, paper number."""
    rows = []
    for variant in variants:
        for metric in metrics:
            values = seed_values(data, variant, metric)
            est = seed_interval(values)
            stderr = seed_values(data, variant, metric + STDERR_SUFFIX)
            delta = (
                seed_difference(data, variant, baseline, metric)
                if baseline is not None and variant != baseline
                else Difference(math.nan, math.nan, math.nan, "", math.nan)
            )
            rows.append(
                {
                    "variant": variant,
                    "metric": metric,
                    "n": int(values.size),
                    "mean": est.value,
                    "low": est.low,
                    "high": est.high,
                    "stderr": float(stderr.mean()) if stderr.size else math.nan,
                    "delta": delta.value,
                    "delta_low": delta.low,
                    "delta_high": delta.high,
                    "delta_test": delta.test or None,  # the baseline's: no test
                    "delta_p": delta.p,
                    "reference": float(reference.get(variant, {}).get(metric, math.nan)),
                }
            )
    return pd.DataFrame(rows).set_index(["variant", "metric"])


def paper_table(
    data: SuiteData,
    variants: Sequence[str],
    columns: Sequence[str],
    ratios: Sequence[str],
    baseline: str | None,
    reference: dict[str, dict[str, float]],
) -> pd.DataFrame:
    """A paper's comparison table as numbers: one row per variant, a (metric, field) column each.

    Per column metric: `mean` over seeds, `half` (95% t-interval half-width, NaN under two
    seeds), `n` seeds and the suite's `reference`. Per ratio metric: `ratio` = mean(variant) /
    mean(baseline), as papers give parameters and throughput relative to their baseline (NaN
    where either mean is missing, there is no baseline, or its mean is 0), the range of the
    per-seed ratios (`ratio_min`, `ratio_max`) and `reference_ratio` from the suite's
    `<metric>:ratio` reference key.
    """
    cells: dict[tuple[str, str], list[float]] = {}
    for metric in columns:
        per_variant = [seed_values(data, v, metric) for v in variants]
        intervals = [seed_interval(values) for values in per_variant]
        cells[(metric, "mean")] = [est.value for est in intervals]
        cells[(metric, "half")] = [(est.high - est.low) / 2 for est in intervals]
        cells[(metric, "n")] = [values.size for values in per_variant]
        cells[(metric, "reference")] = [
            float(reference.get(v, {}).get(metric, math.nan)) for v in variants
        ]
    for metric in ratios:
        base = mean_of(seed_values(data, baseline, metric)) if baseline is not None else math.nan
        cells[(metric, "ratio")] = [
            mean_of(seed_values(data, v, metric)) / base if base != 0 else math.nan
            for v in variants
        ]
        spread = [_ratio_range(data, v, baseline, metric) for v in variants]
        cells[(metric, "ratio_min")] = [low for low, _ in spread]
        cells[(metric, "ratio_max")] = [high for _, high in spread]
        cells[(metric, "reference_ratio")] = [
            float(reference.get(v, {}).get(metric + RATIO_SUFFIX, math.nan)) for v in variants
        ]
    table = pd.DataFrame(cells, index=pd.Index(list(variants), name="variant"))
    table.columns = pd.MultiIndex.from_tuples(list(cells), names=["metric", "field"])
    return table


@_quiet()
def _ratio_range(data: SuiteData, variant: str, baseline: str | None, metric: str
                 ) -> tuple[float, float]:
    """The smallest and largest of a variant's per-seed ratios to the baseline: each seed's
    value over the baseline's of the same seed where both finished the same seeds, else over
    the baseline's mean (NaN without a baseline or a value); what a throughput measured on a
    loaded machine spreads over."""
    if baseline is None:
        return math.nan, math.nan
    own, base = _by_seed(data, variant, metric), _by_seed(data, baseline, metric)
    if own.empty or base.empty:
        return math.nan, math.nan
    paired = list(own.index) == list(base.index)
    ratios = (own / base).to_numpy() if paired else own.to_numpy() / mean_of(base.to_numpy())
    ratios = ratios[np.isfinite(ratios)]
    return (float(ratios.min()), float(ratios.max())) if ratios.size else (math.nan, math.nan)


def compute_table(data: SuiteData, variants: Sequence[str], unit: str = "tokens"
                  ) -> pd.DataFrame:
    """Per variant: finished seeds at its compared (largest) budget and the mean compute they
    consumed (NaN where unrecorded)."""
    finished = data.runs[(data.runs["state"] == FINISHED) & data.runs["compared"]]
    table = pd.DataFrame(index=pd.Index(list(variants), name="variant"))
    table["n"] = [int((finished["variant"] == v).sum()) for v in variants]
    for metric in consumed_metric_names(unit):
        table[metric] = [mean_of(seed_values(data, v, metric)) for v in variants]
    return table


def efficiency_table(data: SuiteData, variants: Sequence[str], unit: str = "tokens"
                     ) -> pd.DataFrame | None:
    """Per variant: the mean over finished seeds of each efficiency metric some run recorded
    (NaN where none of the variant's runs did); None when no run recorded FLOP/s, MFU or peak
    memory (runs from before they were recorded)."""
    recorded = [m for m in efficiency_metric_names(unit) if m in set(data.finals["metric"])]
    flops_per_s, mfu, _, memory = efficiency_metric_names(unit)
    if not {flops_per_s, mfu, memory} & set(recorded):
        return None
    table = pd.DataFrame(index=pd.Index(list(variants), name="variant"))
    for metric in recorded:
        table[metric] = [mean_of(seed_values(data, v, metric)) for v in variants]
    return table


def has_ladder(data: SuiteData) -> bool:
    """Whether some variant finished runs at more than one budget."""
    finished = data.runs[data.runs["state"] == FINISHED]
    return bool((finished.groupby("variant")["budget"].nunique() > 1).any())


def per_seed_table(
    data: SuiteData, variants: Sequence[str], metrics: Sequence[str], unit: str = "tokens"
) -> pd.DataFrame:
    """Every finished run's value of every key metric (with its stderr) and compute: none hidden,
    the lower rungs of a ladder included (with a `budget` column, ordered by it)."""
    recorded = set(data.ladder["metric"])
    columns = []
    for metric in metrics:
        columns.append(metric)
        if metric + STDERR_SUFFIX in recorded:
            columns.append(metric + STDERR_SUFFIX)
    columns += [m for m in consumed_metric_names(unit) if m in recorded]
    columns = list(dict.fromkeys(columns))  # a key metric may itself be a stderr or compute key
    wide = data.ladder.pivot(index="run_id", columns="metric", values="value")
    wide = wide.reindex(columns=columns)
    keys = ["run_id", "variant", "seed", *(["budget"] if has_ladder(data) else [])]
    finished = data.runs[data.runs["state"] == FINISHED][keys]
    table = finished.merge(wide, left_on="run_id", right_index=True, how="left")
    return _in_variant_order(table, variants)


def unfinished_table(data: SuiteData, variants: Sequence[str]) -> pd.DataFrame:
    """Runs that failed or never finished, with their reason; they enter no mean."""
    table = data.runs[data.runs["state"] != FINISHED]
    return _in_variant_order(
        table[["run_id", "variant", "seed", "state", "reason", "path", "started", "ended"]],
        variants
    )


def provenance_table(data: SuiteData, variants: Sequence[str]) -> pd.DataFrame:
    """Per run: where and from what code it ran (commit, device, host, python, times)."""
    rows = []
    for run in data.runs.itertuples(index=False):
        prov = json_object(run.provenance, "provenance", run.run_id)
        commit = prov.get("git_commit")
        if commit and prov.get("git_dirty"):
            commit = f"{commit} (dirty)"
        rows.append(
            {
                "run_id": run.run_id,
                "variant": run.variant,
                "seed": run.seed,
                "state": run.state,
                "commit": commit,
                "device": prov.get("device_name") or prov.get("device"),
                "host": prov.get("host"),
                "python": prov.get("python"),
                "started": run.started or prov.get("started"),
                "ended": run.ended or prov.get("ended"),
            }
        )
    return _in_variant_order(pd.DataFrame(rows), variants)


def package_table(data: SuiteData) -> pd.DataFrame:
    """Package versions across runs: one row per package, every distinct version with its count."""
    counts: dict[str, dict[str, int]] = {}
    for run in data.runs.itertuples(index=False):
        packages = json_object(run.provenance, "provenance", run.run_id).get("packages") or {}
        for name, version in packages.items():
            per_version = counts.setdefault(name, {})
            per_version[str(version)] = per_version.get(str(version), 0) + 1
    rows = [
        {"package": name, "versions": dict(sorted(versions.items()))}
        for name, versions in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["package", "versions"])


def _in_variant_order(table: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(variants)}
    key = table["variant"].map(lambda v: rank.get(v, len(rank)))
    budget = ["budget"] if "budget" in table else []
    return (
        table.assign(_rank=key)
        .sort_values(["_rank", "variant", *budget, "seed", "run_id"])
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
