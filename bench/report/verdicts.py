"""A report's first lines: for each variant and key metric, one verdict against the baseline
(better, worse, a tie, no detectable difference at this budget, or not tested) with the test
it rests on.

The verdict rests on the sharpest test there is: the paired test over examples where both
variants' runs scored the same examples (`paired.py`), else the test over seeds (paired t or
Welch). A difference is called one where that test's two-sided p is below ALPHA; a difference of
exactly 0 is a tie; a metric without a direction is said to be higher or lower."""

import math
from collections.abc import Sequence

import pandas as pd

from bench.report.formatting import fmt_signed
from bench.report.sections import ALPHA, metric_label
from bench.report.spec import ReportSpec


def verdicts(spec: ReportSpec, variants: Sequence[str], summary: pd.DataFrame) -> list[str]:
    """One line per variant (the baseline aside) and key metric; none without a baseline."""
    if spec.baseline is None:
        return []
    return [verdict(spec, variant, metric, summary.loc[(variant, metric)])
            for variant in variants if variant != spec.baseline for metric in spec.metrics]


def verdict(spec: ReportSpec, variant: str, metric: str, est: pd.Series) -> str:
    """`variant` against the baseline on `metric`, in one line."""
    claim = f"{variant} vs {spec.baseline}, {metric_label(spec, metric)}"
    examples = isinstance(est.get("example_test"), str)
    seeds = isinstance(est.get("delta_test"), str) and not math.isnan(est["delta"])
    if not examples and not seeds:
        return f"{claim}: not tested (no seed of both finished, and no per-example rows)"
    if examples:
        diff, p = float(est["example_diff"]), float(est["example_p"])
        test = f"{est['example_test']} over {int(est['examples']):,} examples × " \
               f"{int(est['example_seeds'])} seed{'s' * (int(est['example_seeds']) != 1)}"
        if est["example_test"] == "McNemar":
            test += (f", {int(est['discordant_better'])} vs {int(est['discordant_worse'])} "
                     "discordant")
    else:
        diff, p = float(est["delta"]), float(est["delta_p"])
        test = f"{est['delta_test']} t-test over {int(est['n'])} seed{'s' * (int(est['n']) != 1)}"
    shown = f"{test}, p={p:.2g}" if not math.isnan(p) else f"{test}, p undefined"
    if examples and seeds and not math.isnan(est["delta_p"]):
        shown += f"; over seeds: {est['delta_test']} t-test p={est['delta_p']:.2g}"
    if diff == 0:
        return f"{claim}: tie (the same value; {shown})"
    if math.isnan(p):  # one seed, or seeds that all agree: nothing to test the difference by
        return f"{claim}: not tested ({fmt_signed(diff)}; {shown})"
    if p >= ALPHA:
        return f"{claim}: no detectable difference at this budget ({fmt_signed(diff)}; {shown})"
    higher = spec.higher_is_better.get(metric)
    word = ("higher" if diff > 0 else "lower") if higher is None else (
        "better" if (diff > 0) == higher else "worse")
    return f"{claim}: {word} ({fmt_signed(diff)}; {shown})"
