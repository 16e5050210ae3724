"""A metric against compute, from a suite's budget ladder: fitted curves, the compute at which a
variant matches the baseline (with a bootstrap interval over seeds), and efficiency ratios.

Every number is measured: a fit is drawn only over the compute the runs consumed, and a variant
whose rungs never reach the baseline's score is "not reached", never extrapolated. Numbers only
(pandas, numpy, scipy); formatting belongs to the renderer.
"""

import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from bench.report.statistics import LEVEL, consumed_metric_names, paper_table
from bench.report.suite_data import SuiteData
from bench.store.queries import FINISHED

# A reference key `<metric>:compute_ratio` is the paper's compute-to-match ratio of a variant.
COMPUTE_RATIO_SUFFIX = ":compute_ratio"
RESAMPLES = 2000
# A magnitude past which a value is an overflow's stand-in (a diverged run's 1e308), not a
# measurement: figures and fits leave such values out (their squares and an axis's span must
# stay finite), and the report says how many.
DRAWN_LIMIT = 1e150
BOOTSTRAP_SEED = 0  # a fixed generator: the same index always gives the same interval
POWER_LAW, LOG_LINEAR = "power law", "log-linear"


def default_compute_metrics(metrics: Sequence[str]) -> list[str]:
    """The report's metrics read against compute unless the suite names them: all but the
    training records and model sizes, which are costs, not scores."""
    return [m for m in metrics if not m.startswith(("train.", "model."))]


def is_latency(metric: str) -> bool:
    """A timed metric in milliseconds (the speed evaluator's `_ms`, detection's
    `ms_per_image`)."""
    return metric.endswith(("_ms", "ms_per_image"))


def ladder_units(data: SuiteData) -> list[str]:
    """The budget units of the finished runs (one, unless variants override the unit)."""
    finished = data.runs[data.runs["state"] == FINISHED]
    return sorted(finished["unit"].dropna().unique())


def drawable(values: pd.Series | np.ndarray) -> np.ndarray:
    """Which values a figure or a fit takes: finite numbers within +-DRAWN_LIMIT."""
    v = np.asarray(values, dtype=float)
    return np.isfinite(v) & (np.abs(v) <= DRAWN_LIMIT)


def ladder_points(data: SuiteData, metric: str) -> pd.DataFrame:
    """Every finished run's final `metric` with the compute it consumed in its budget's unit
    (its recorded `train.<unit>`, else its budget): run_id, variant, seed, budget, compute,
    value, ordered by variant, budget and seed. Runs whose value or compute is not `drawable`
    (or whose compute is not positive) are left out."""
    runs = data.runs.loc[data.runs["state"] == FINISHED, ["run_id", "budget", "unit"]]
    rows = data.ladder.merge(runs, on="run_id")
    values = rows.loc[rows["metric"] == metric, ["run_id", "variant", "seed", "budget", "value"]]
    consumed = rows.loc[rows["metric"] == "train." + rows["unit"].fillna(""),
                        ["run_id", "value"]].rename(columns={"value": "compute"})
    points = values.merge(consumed, on="run_id", how="left")
    points["compute"] = points["compute"].fillna(points["budget"])
    points = points[drawable(points["compute"]) & (points["compute"] > 0)
                    & drawable(points["value"])]
    return points.sort_values(["variant", "budget", "seed"]).reset_index(drop=True)


@dataclass(frozen=True)
class Fit:
    """A curve through one variant's points (every seed's): its form, parameters, residuals
    (observed - fitted, per point in the order given) and why this form was chosen."""

    form: str
    params: dict[str, float]
    residuals: np.ndarray
    aicc: float
    reason: str

    def predict(self, compute: np.ndarray) -> np.ndarray:
        """The fitted metric at `compute`."""
        p = self.params
        if self.form == POWER_LAW:
            return _power_law(np.log(compute / p["c_ref"]), p["a"], p["b"], p["c"], p["sign"])
        return p["alpha"] + p["beta"] * np.log10(compute)


def _power_law(u: np.ndarray, a: float, b: float, c: float, sign: float) -> np.ndarray:
    """a - sign*b*(C/C_ref)^(-c) with u = ln(C/C_ref): saturates at a from below (sign +1,
    higher is better) or above (sign -1)."""
    return a - sign * b * np.exp(-c * u)


def _aicc(rss: float, n: int, params: int, scale: float) -> float:
    """AICc of a least-squares fit with Gaussian errors; k counts the noise variance too. The
    residual sum is floored far below any real noise, so an exact fit stays finite."""
    k = params + 1
    if n - k - 1 <= 0:
        return math.inf
    rss = max(rss, n * (1e-12 * scale) ** 2, n * sys.float_info.min)  # values of 1e-300 too
    return n * math.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def _log_linear(log_c: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """alpha + beta log10 C by least squares: parameters and residuals."""
    beta, alpha = np.polyfit(log_c, y, 1)
    return {"alpha": float(alpha), "beta": float(beta)}, y - (alpha + beta * log_c)


def _fit_power_law(compute: np.ndarray, y: np.ndarray, sign: float
                   ) -> tuple[dict[str, float], np.ndarray] | None:
    """a - sign*b*C^(-c) (b, c > 0) by curve_fit on u = ln(C / smallest C), the best of a few
    starting exponents; None when no start converges to finite parameters. y is fitted over a
    power of two near its largest magnitude (a and b scale with it, exactly): the solver's norms
    of values such as 1e140 would overflow."""
    c_ref = float(compute.min())
    u = np.log(compute / c_ref)
    scale = 2.0 ** math.frexp(float(np.abs(y).max()) or 1.0)[1]
    y = y / scale
    span = float(np.ptp(y)) or 1.0
    best: tuple[float, dict[str, float], np.ndarray] | None = None
    for c0 in (0.1, 0.5, 1.0, 2.0):
        a0 = float(y.max() if sign > 0 else y.min()) + sign * 0.1 * span
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                (a, b, c), _ = curve_fit(
                    lambda x, a, b, c: _power_law(x, a, b, c, sign), u, y,
                    p0=(a0, span, c0), bounds=([-np.inf, 0.0, 1e-4], [np.inf, np.inf, 10.0]),
                    maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        residuals = y - _power_law(u, a, b, c, sign)
        rss = float(residuals @ residuals)
        if np.isfinite([a, b, c, rss]).all() and (best is None or rss < best[0]):
            params = {"a": float(a) * scale, "b": float(b) * scale, "c": float(c),
                      "c_ref": c_ref, "sign": sign}
            best = (rss, params, residuals * scale)
    return None if best is None else (best[1], best[2])


def fit_curve(compute: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray,
              higher_is_better: bool | None) -> Fit | None:
    """The curve of a metric against compute, chosen by AICc (small-sample Akaike).

    Two forms: log-linear y = alpha + beta log10 C (2 parameters, needs at least 2 distinct
    computes and more points than parameters) and the saturating power law
    y = a - b C^(-c) (b, c > 0; y = a + b C^(-c) where lower is better; where neither is, the
    log-linear slope's direction), 3 parameters, needs 3 distinct computes and an AICc (more
    than 5 points, counting the noise variance as a parameter). The form with the lower AICc
    wins; a power law that does not converge gives way to log-linear, and the reason says so.
    None when not even log-linear can be fitted.
    """
    c, y = np.asarray(compute, dtype=float), np.asarray(values, dtype=float)
    distinct = np.unique(c).size
    if distinct < 2 or y.size <= 2:
        return None
    log_c = np.log10(c)
    scale = float(np.abs(y).max()) or 1.0
    line, line_res = _log_linear(log_c, y)
    linear = Fit(LOG_LINEAR, line, line_res, _aicc(float(line_res @ line_res), y.size, 2, scale),
                 "")
    if distinct < 3 or y.size <= 5:
        return _because(linear, "too few points for a power law")
    sign = (1.0 if higher_is_better else -1.0) if higher_is_better is not None else (
        1.0 if line["beta"] >= 0 else -1.0)
    power = _fit_power_law(c, y, sign)
    if power is None:
        return _because(linear, "the power law did not converge")
    params, residuals = power
    law = Fit(POWER_LAW, params, residuals,
              _aicc(float(residuals @ residuals), y.size, 3, scale), "")
    chosen, other = (law, linear) if law.aicc < linear.aicc else (linear, law)
    return _because(chosen, f"lower AICc ({chosen.aicc:.1f} vs {other.aicc:.1f} "
                            f"for the {other.form})")


def _because(fit: Fit, reason: str) -> Fit:
    return replace(fit, reason=reason)


def fit_variants(points: pd.DataFrame, variants: Sequence[str],
                 higher_is_better: bool | None) -> dict[str, Fit]:
    """Each variant's fit over all its seeds' points (variants without one are left out)."""
    fits = {}
    for variant in variants:
        own = points[points["variant"] == variant]
        fit = fit_curve(own["compute"].to_numpy(), own["value"].to_numpy(), higher_is_better)
        if fit is not None:
            fits[variant] = fit
    return fits


# Distinct seed resamples below which a 95% percentile interval is not shown: its 2.5% tails
# would rest on one or two resamples (two seeds allow 3, three 10, four 35, five 126).
MEANINGFUL = 40
# What a compute-to-match is: a crossing interpolated between two rungs, a bound (the smallest
# rung already beats the target), not reached (no rung does), or the baseline itself.
CROSSING, BOUND, NOT_REACHED, BASELINE = "crossing", "upper bound", "not reached", "baseline"


@dataclass(frozen=True)
class Rungs:
    """One variant's points as a seeds x rungs grid (NaN where a seed lacks a rung): the
    metric and log10 of the compute consumed, rungs in increasing budget."""

    seeds: list[int]
    values: np.ndarray
    log_compute: np.ndarray

    def means(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per resample (rows of `weights`: how often each seed was drawn) and rung: the mean
        metric and mean log compute over the drawn seeds that have the rung (NaN if none)."""
        present = np.isfinite(self.values)
        counts = weights @ present
        with np.errstate(invalid="ignore", divide="ignore"):
            values = weights @ np.where(present, self.values, 0.0) / counts
            log_c = weights @ np.where(present, self.log_compute, 0.0) / counts
        return values, log_c


def rung_grid(points: pd.DataFrame, variant: str) -> Rungs:
    """`variant`'s points (of `ladder_points`) as a grid of seeds by rungs."""
    own = points[points["variant"] == variant]
    values = own.pivot_table(index="seed", columns="budget", values="value", aggfunc="mean")
    compute = own.pivot_table(index="seed", columns="budget", values="compute", aggfunc="mean")
    return Rungs([int(s) for s in values.index], values.to_numpy(dtype=float),
                 np.log10(compute.reindex_like(values).to_numpy(dtype=float)))


def crossing(values: np.ndarray, log_compute: np.ndarray, target: float, higher: bool
             ) -> tuple[str, float]:
    """Where a variant's rung means first reach `target` in the better direction, by linear
    interpolation in log compute between consecutive rungs: (CROSSING, log10 C); (BOUND,
    log10 C of the smallest rung) when that rung already reaches it; (NOT_REACHED, NaN) when
    no rung does. Rungs without a mean are skipped; nothing is extrapolated."""
    keep = np.isfinite(values) & np.isfinite(log_compute)
    v, x = values[keep], log_compute[keep]
    reached = v >= target if higher else v <= target
    if not reached.any():
        return NOT_REACHED, math.nan
    i = int(np.argmax(reached))
    if i == 0:
        return BOUND, float(x[0])
    t = (target - v[i - 1]) / (v[i] - v[i - 1])
    return CROSSING, float(x[i - 1] + t * (x[i] - x[i - 1]))


@dataclass(frozen=True)
class Match:
    """A variant's compute to match the baseline's score at the baseline's largest budget.

    `compute` and `ratio` (baseline's top compute / compute to match) are NaN when not
    reached; under BOUND they are bounds (compute <=, ratio >=). The 95% percentile interval
    over seed resamples: `compute_high` is inf and `ratio_low` 0 when more than 2.5% of the
    resamples never reach the target; `bounded` is the share of resamples that reach it at
    their smallest rung (their value is then that rung's, a bound)."""

    kind: str
    compute: float
    ratio: float
    compute_low: float
    compute_high: float
    ratio_low: float
    ratio_high: float
    not_reached: float
    bounded: float
    resampling: str  # "joint" (the same seeds drawn for both) or "independent"
    distinct: int = 0  # distinct resamples the seeds allow (an interval needs MEANINGFUL)
    tie: bool = False  # the rung that reaches the target equals it exactly

    @property
    def meaningful(self) -> bool:
        """Whether the seeds allow enough distinct resamples for a 95% percentile interval."""
        return self.distinct >= MEANINGFUL


def compute_to_match(points: pd.DataFrame, variants: Sequence[str], baseline: str,
                     higher_is_better: bool, resamples: int = RESAMPLES) -> dict[str, Match]:
    """Each variant's `Match` against `baseline` (the baseline's own: ratio 1 by definition).

    target = the baseline's mean over seeds at its largest rung. Seeds are resampled with
    replacement, jointly with the baseline's when both finished the same seeds (a seed fixes
    the data order, so its luck is shared), else independently; every variant's resamples come
    from a generator seeded with BOOTSTRAP_SEED, so a report is reproducible.
    """
    base = rung_grid(points, baseline)
    if base.values.size == 0:
        return {}
    goal = target(base)
    base_log_c = float(np.nanmean(base.log_compute[:, -1]))
    out = {}
    for variant in variants:
        if variant == baseline:
            c = 10**base_log_c
            out[variant] = Match(BASELINE, c, 1.0, c, c, 1.0, 1.0, 0.0, 0.0, "")
            continue
        own = rung_grid(points, variant)
        if own.values.size == 0:
            continue
        means = np.nanmean(own.values, axis=0)
        kind, log_c = crossing(means, np.nanmean(own.log_compute, axis=0), goal,
                               higher_is_better)
        reached = means[np.isfinite(means) & ((means >= goal) if higher_is_better
                                             else (means <= goal))]
        out[variant] = replace(
            _bootstrap(own, base, kind, log_c, base_log_c, higher_is_better, resamples),
            tie=bool(reached.size and reached[0] == goal))
    return out


def _draws(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """How often each of n seeds is drawn in each resample (resamples x n)."""
    picks = rng.integers(0, n, size=(resamples, n))
    counts = np.zeros((resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)
    return counts


def _bootstrap(own: Rungs, base: Rungs, kind: str, log_c: float, base_log_c: float,
               higher: bool, resamples: int) -> Match:
    """The point estimate with its percentile interval over seed resamples."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    joint = own.seeds == base.seeds
    own_w = _draws(rng, resamples, len(own.seeds))
    base_w = own_w if joint else _draws(rng, resamples, len(base.seeds))
    values, log_cs = own.means(own_w)
    base_values, base_log_cs = base.means(base_w)
    targets, tops = base_values[:, -1], base_log_cs[:, -1]
    found = [crossing(v, x, t, higher) for v, x, t in zip(values, log_cs, targets, strict=True)]
    kinds = np.array([k for k, _ in found])
    log_match = np.array([x for _, x in found])
    reached = kinds != NOT_REACHED
    not_reached = float(1 - reached.mean())
    # A resample that never reaches the target needs infinite compute: its ratio is 0.
    compute = np.where(reached, 10**log_match, math.inf)
    ratio = np.where(reached, 10 ** (tops - np.where(reached, log_match, 0.0)), 0.0)
    tail = (1 - LEVEL) / 2
    low_c, high_c = np.quantile(compute, [tail, 1 - tail], method="inverted_cdf")
    low_r, high_r = np.quantile(ratio, [tail, 1 - tail], method="inverted_cdf")
    point = 10**log_c if kind != NOT_REACHED else math.nan
    return Match(
        kind=kind,
        compute=point,
        ratio=10**base_log_c / point if kind != NOT_REACHED else math.nan,
        compute_low=float(low_c),
        compute_high=math.inf if not_reached > tail else float(high_c),
        ratio_low=0.0 if not_reached > tail else float(low_r),
        ratio_high=float(high_r),
        not_reached=not_reached,
        bounded=float((kinds == BOUND).mean()),
        resampling="joint" if joint else "independent",
        distinct=distinct_resamples(len(own.seeds)) * (
            1 if joint else distinct_resamples(len(base.seeds))),
    )


def distinct_resamples(n: int) -> int:
    """How many different resamples with replacement n seeds allow (multisets of size n:
    C(2n - 1, n)): 3 for two seeds, 10 for three, 126 for five."""
    return math.comb(2 * n - 1, n) if n else 0


def target(base: Rungs) -> float:
    """The score to match: the baseline's mean over seeds at its largest rung (NaN if none)."""
    return float(np.nanmean(base.values[:, -1])) if base.values.size else math.nan


def efficiency_ratios(data: SuiteData, variants: Sequence[str], baseline: str,
                      metrics: Sequence[str], unit: str,
                      reference: dict[str, dict[str, float]]) -> pd.DataFrame | None:
    """Per variant at its largest budget: mean over seeds of its training throughput
    (`train.<unit>_per_s`) and of each latency metric of the report over the baseline's, with
    the suite's `<metric>:ratio` reference (columns (metric, ratio | reference_ratio), as in
    `paper_table`); None when no run recorded any of them."""
    recorded = set(data.finals["metric"])
    wanted = [consumed_metric_names(unit)[2], *(m for m in metrics if is_latency(m))]
    shown = [m for m in dict.fromkeys(wanted) if m in recorded]
    if not shown:
        return None
    return paper_table(data, variants, [], shown, baseline, reference)


def claimed_ratio(reference: dict[str, dict[str, float]], variant: str, metric: str) -> float:
    """The paper's compute-to-match ratio of `variant` on `metric` (NaN where not given)."""
    return float(reference.get(variant, {}).get(metric + COMPUTE_RATIO_SUFFIX, math.nan))
