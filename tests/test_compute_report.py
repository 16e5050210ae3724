"""A metric against compute from a budget ladder: fits, compute to match with bootstrap
intervals, efficiency ratios, and the report section they make."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import reported_spec

from bench.config.suite import load_suite
from bench.errors import UserError
from bench.report import (
    ReportSpec,
    compute,
    compute_section,
    formatting,
    render_report,
    sections,
    statistics,
)
from bench.report import render as render_mod
from bench.report.suite_data import load_suite_data
from bench.store.runs import Store

SUITE = "ladder-demo"
RUNGS = [1e15, 3e15, 1e16, 3e16, 1e17]
LUCK = [0.004, -0.003, 0.001, -0.002]  # what a seed adds to every run it seeds


def _line(offset: float, slope: float):
    """A metric linear in log10 compute: interpolation between rungs is then exact."""
    return lambda c: offset + slope * math.log10(c / 1e15)


BASE = _line(0.50, 0.05)  # 0.60 at 1e17: the target
# Reaches 0.60 where 0.52 + 0.06 x = 0.60: x = 4/3, C = 1e15 * 10^(4/3), between 1e16 and 3e16.
FAST = _line(0.52, 0.06)
FAST_MATCH = 1e15 * 10 ** (4 / 3)


def _points(curves: dict, seeds: dict | None = None, noise: float = 0.0) -> pd.DataFrame:
    """ladder_points' frame for the given per-variant curves, each seed adding its luck."""
    rng = np.random.default_rng(7)
    rows = []
    for variant, curve in curves.items():
        for seed in (seeds or {}).get(variant, range(len(LUCK))):
            for budget in RUNGS:
                value = curve(budget) + LUCK[seed % len(LUCK)] + noise * rng.standard_normal()
                rows.append({"run_id": f"{variant}-{seed}-{budget:g}", "variant": variant,
                             "seed": seed, "budget": budget, "compute": budget, "value": value})
    return pd.DataFrame(rows)


def test_compute_to_match_interpolates_the_exact_crossing() -> None:
    matches = compute.compute_to_match(_points({"base": BASE, "fast": FAST}), ["base", "fast"],
                                       "base", higher_is_better=True)
    fast = matches["fast"]
    assert fast.kind == compute.CROSSING
    assert fast.compute == pytest.approx(FAST_MATCH)
    assert fast.ratio == pytest.approx(1e17 / FAST_MATCH)
    assert fast.not_reached == 0 and fast.resampling == "joint"
    base = matches["base"]
    assert (base.kind, base.ratio, base.compute) == (compute.BASELINE, 1.0, pytest.approx(1e17))


def test_lower_is_better_crosses_downwards() -> None:
    loss = {"base": lambda c: -BASE(c), "fast": lambda c: -FAST(c)}
    fast = compute.compute_to_match(_points(loss), ["fast"], "base", higher_is_better=False)
    assert fast["fast"].kind == compute.CROSSING
    assert fast["fast"].compute == pytest.approx(FAST_MATCH)


def test_a_variant_that_never_reaches_the_target_is_not_extrapolated() -> None:
    slow = _line(0.40, 0.04)  # 0.56 at the top rung: below 0.60, though its line goes on
    match = compute.compute_to_match(_points({"base": BASE, "slow": slow}), ["slow"], "base",
                                     higher_is_better=True)["slow"]
    assert match.kind == compute.NOT_REACHED
    assert math.isnan(match.compute) and math.isnan(match.ratio)
    assert match.not_reached == 1.0
    assert match.compute_high == math.inf and match.ratio_low == 0.0
    spec = _spec(baseline="base", variants=["base", "slow"])
    row = compute_section.match_table({"slow": match}, spec, "glue.score", "flops").rows[0]
    # no end of either interval is reached: one "not reached", not "inf" or "x0.00"
    assert [c.text for c in row[1:5]] == [compute.NOT_REACHED] * 4 and row[5].text == "100.0%"


def test_a_smallest_rung_beyond_the_target_is_an_upper_bound() -> None:
    strong = _line(0.65, 0.01)
    match = compute.compute_to_match(_points({"base": BASE, "strong": strong}), ["strong"],
                                     "base", higher_is_better=True)["strong"]
    assert match.kind == compute.BOUND
    assert match.compute == pytest.approx(1e15) and match.ratio == pytest.approx(100.0)
    assert match.bounded == 1.0


def test_bootstrap_contains_the_truth_and_is_reproducible() -> None:
    points = _points({"base": BASE, "fast": FAST}, noise=0.004)
    first = compute.compute_to_match(points, ["fast"], "base", True)["fast"]
    assert first.compute_low < FAST_MATCH < first.compute_high
    assert first.ratio_low < 1e17 / FAST_MATCH < first.ratio_high
    assert first.compute_low < first.compute < first.compute_high
    assert compute.compute_to_match(points, ["fast"], "base", True)["fast"] == first


def test_seeds_are_resampled_jointly_only_when_both_finished_the_same_seeds() -> None:
    """Each seed's luck shifts both variants alike: drawn jointly, it cancels out of the match;
    drawn independently (other seeds), it widens the interval."""
    joint = compute.compute_to_match(_points({"base": BASE, "fast": FAST}), ["fast"], "base",
                                     True)["fast"]
    other = _points({"base": BASE, "fast": FAST}, seeds={"fast": [4, 5, 6, 7]})
    independent = compute.compute_to_match(other, ["fast"], "base", True)["fast"]
    assert (joint.resampling, independent.resampling) == ("joint", "independent")
    assert joint.compute_low == pytest.approx(FAST_MATCH) == joint.compute_high
    assert independent.compute == pytest.approx(FAST_MATCH)
    assert independent.compute_low < FAST_MATCH < independent.compute_high
    assert independent.compute_high / independent.compute_low > 1.2


def test_power_law_data_pick_the_power_law_with_small_residuals() -> None:
    c = np.repeat(RUNGS, 3)
    luck = np.tile([0.003, -0.002, -0.001], len(RUNGS))
    fit = compute.fit_curve(c, 0.8 - 0.3 * (c / 1e15) ** -0.5 + luck, higher_is_better=True)
    assert fit is not None and fit.form == compute.POWER_LAW and "lower AICc" in fit.reason
    assert fit.params["c"] == pytest.approx(0.5, rel=0.05)
    assert np.abs(fit.residuals).max() < 0.005
    assert fit.predict(np.array([1e17]))[0] == pytest.approx(0.8 - 0.03, abs=0.005)
    loss = compute.fit_curve(c, 2.0 + 1.5 * (c / 1e15) ** -0.3 + luck, higher_is_better=False)
    assert loss is not None and loss.form == compute.POWER_LAW
    assert loss.params["a"] == pytest.approx(2.0, abs=0.01)


def test_log_linear_data_pick_log_linear() -> None:
    c = np.repeat(RUNGS, 3)
    luck = np.tile([0.003, -0.002, -0.001], len(RUNGS))
    fit = compute.fit_curve(c, 0.5 + 0.05 * np.log10(c / 1e15) + luck, higher_is_better=True)
    assert fit is not None and fit.form == compute.LOG_LINEAR and "lower AICc" in fit.reason
    assert fit.params["beta"] == pytest.approx(0.05, abs=1e-6)
    assert fit.residuals == pytest.approx(luck, abs=1e-6)


def test_too_few_points_fit_log_linear_or_nothing() -> None:
    few = compute.fit_curve([1e15, 1e16, 1e17], [0.5, 0.6, 0.65], higher_is_better=True)
    assert few is not None and few.form == compute.LOG_LINEAR
    assert few.reason == "too few points for a power law"
    assert compute.fit_curve([1e15, 1e15, 1e15], [0.5, 0.6, 0.7], True) is None
    assert compute.fit_curve([1e15, 1e16], [0.5, 0.6], True) is None


# A ladder in a real results store: two variants, three rungs, two seeds; `wide` records its
# training FLOPs a little under each budget, `narrow` records none (its budget stands in).
LADDER = [1e9, 3e9, 1e10]
SCORE = {"narrow": _line(0.50, 0.05), "wide": _line(0.53, 0.05)}


def _ladder_store(root: Path, ladder: list[float] = LADDER) -> Path:
    store = Store(root)
    for variant, curve in SCORE.items():
        for seed in (0, 1):
            for budget in ladder:
                run_id = f"{variant}-{seed}-{budget:g}"
                metrics = {"glue.score": curve(budget * 1e6) + LUCK[seed],
                           "val.mse": 1.0 - curve(budget * 1e6),
                           "train.rows_per_s": 100.0 * (2 if variant == "wide" else 1) + seed}
                if variant == "wide":
                    metrics["train.flops"] = 0.98 * budget
                store.begin(SUITE, variant, seed, run_id, {"budget": {"flops": budget}},
                            {"started": "2025-01-01"})
                store.finish(run_id, metrics, [], {})
    return root / "index.sqlite"


def _spec(**changes: object) -> ReportSpec:
    fields = dict(suite=SUITE, title="ladder", baseline="narrow",
                  metrics=["glue.score", "val.mse", "train.rows_per_s"],
                  higher_is_better={"glue.score": True, "val.mse": False,
                                    "train.rows_per_s": True},
                  reference={"wide": {"glue.score:compute_ratio": 20.0,
                                      "train.rows_per_s:ratio": 2.13}},
                  reference_source="the paper", notes=[], variants=["narrow", "wide"],
                  item_unit="rows", curve="curve.loss")
    return ReportSpec(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_ladder_keeps_every_rung_while_finals_keep_the_largest(tmp_path: Path) -> None:
    data = load_suite_data(_ladder_store(tmp_path), SUITE)
    assert set(data.finals.loc[data.finals["metric"] == "glue.score", "run_id"]) == {
        f"{v}-{s}-1e+10" for v in SCORE for s in (0, 1)}
    points = compute.ladder_points(data, "glue.score")
    assert len(points) == 12 and statistics.has_ladder(data)
    by_run = points.set_index("run_id")["compute"]
    assert by_run["wide-0-3e+09"] == pytest.approx(0.98 * 3e9)  # what the run consumed
    assert by_run["narrow-1-3e+09"] == pytest.approx(3e9)  # no record: its budget
    assert compute.ladder_units(data) == ["flops"]
    # the main table counts the seeds it compares: those at the largest budget
    assert statistics.compute_table(data, ["narrow", "wide"])["n"].tolist() == [2, 2]
    # every run has its row, the lower rungs' values included, ordered by budget
    every = statistics.per_seed_table(data, ["narrow", "wide"], ["glue.score"])
    assert len(every) == 12 and every["glue.score"].notna().all()
    assert every.loc[every["variant"] == "wide", "budget"].tolist() == [1e9, 1e9, 3e9, 3e9,
                                                                         1e10, 1e10]
    header = sections.format_per_seed_table(every).columns
    assert header[:5] == ["variant", "seed", "run", "budget", "glue.score"]


def test_efficiency_ratios_reuse_the_paper_table(tmp_path: Path) -> None:
    data = load_suite_data(_ladder_store(tmp_path), SUITE)
    frame = compute.efficiency_ratios(data, ["narrow", "wide"], "narrow", ["glue.score"], "rows",
                                      _spec().reference)
    assert frame is not None
    assert frame.loc["wide", ("train.rows_per_s", "ratio")] == pytest.approx(200.5 / 100.5)
    assert frame.loc["wide", ("train.rows_per_s", "reference_ratio")] == 2.13
    assert compute.efficiency_ratios(data, ["narrow"], "narrow", [], "images", {}) is None


def test_a_ladder_report_has_the_compute_section(tmp_path: Path) -> None:
    index = _ladder_store(tmp_path)
    html = render_mod.render_html(index, _spec(), load_suite_data(index, SUITE))
    assert "<h2>Metric against compute</h2>" in html
    section = html[html.index('<section class="ladder">'):]
    section = section[:section.index("</section>")]
    assert section.count("<svg") == 2  # glue.score and val.mse; not train.*
    assert "wide: log-linear fit" in section and "target: narrow at its largest budget" in section
    match = re.search(r'<table class="match">(.*?)</table>', section, re.S)
    assert match is not None
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(
        r"<tr>(.*?)</tr>", match.group(1).split("<tbody>")[1], re.S)]
    # narrow's top rung scores 0.55 (plus the seeds' luck, shared): wide, 0.03 ahead at a slope
    # of 0.05 per decade, gets there at 10^0.4 of 1e9 budget, of which it records 98%
    assert rows[0][:4] == ["narrow", "1.000e+10", formatting.DASH, "×1 (baseline)"]
    # two seeds allow three distinct resamples: no interval is shown
    assert rows[1] == ["wide", f"{0.98 * 10**9.4:.3e}", "not meaningful (3 resamples)", "×4.06",
                       "not meaningful (3 resamples)", "0.0%", "joint", "×20.00"]
    assert '<table class="fits">' in section
    # throughput against the baseline, beside the paper's ratio: a section of its own
    ratios = html[html.index("<h2>Throughput and latency against narrow</h2>"):]
    ratios = ratios[:ratios.index("</table>")]
    # the per-seed range: each seed's throughput over the baseline's of the same seed
    assert re.findall(r"<td[^>]*>(.*?)</td>", ratios)[-4:] == ["wide", "×2.00", "×1.99–×2.00",
                                                               "×2.13"]


def test_metrics_scored_on_a_proxy_are_labelled_in_the_compute_section(tmp_path: Path) -> None:
    index = _ladder_store(tmp_path)
    data = load_suite_data(index, SUITE)
    html = render_mod.render_html(index, _spec(proxies=["glue"]), data)
    section = html[html.index('<section class="ladder">'):]
    assert "<h3>glue.score (PROXY data)</h3>" in section
    assert "glue.score (PROXY data) against training flops" in section  # the figure's title
    assert "Compute to match: glue.score (PROXY data)" in section
    assert "<h3>val.mse</h3>" in section  # not a proxy's metric
    assert "PROXY" not in render_mod.render_html(index, _spec(), data)


def test_a_report_without_a_ladder_has_no_compute_section(tmp_path: Path) -> None:
    index = _ladder_store(tmp_path, ladder=[1e10])
    data = load_suite_data(index, SUITE)
    assert not statistics.has_ladder(data)
    html = render_mod.render_html(index, _spec(), data)
    assert "Metric against compute" not in html and 'class="ladder"' not in html
    assert "<h2>Throughput and latency against narrow</h2>" in html  # any suite with a baseline


def test_the_ladder_section_reaches_the_pdf(tmp_path: Path) -> None:
    html, pdf = render_report(_ladder_store(tmp_path), _spec(compute_metrics=["glue.score"]),
                              tmp_path / "out")
    text = html.read_text(encoding="utf-8")
    assert text.count("Compute to match: glue.score") == 1 and "val.mse</h3>" not in text
    assert pdf.read_bytes().startswith(b"%PDF")


SUITE_FILE = """suite: ladder
family: toy
seeds: [0, 1]
budget: {steps: [10, 20]}
evals: []
report: {baseline: narrow, metrics: [val.mse], compute_metrics: [val.mse]}
variants:
  narrow: {}
  wide: {width: 16}
reference:
  wide: {"val.mse:compute_ratio": 20}
"""


def test_compute_metrics_and_claims_reach_the_report_spec(tmp_path: Path, toy: None) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_FILE)
    spec = reported_spec(path, tmp_path)
    assert spec.compute_metrics == ["val.mse"]
    assert spec.higher_is_better["val.mse"] is False
    assert compute.claimed_ratio(spec.reference, "wide", "val.mse") == 20.0


@pytest.mark.parametrize(("new", "expected"), [
    ('"val.mse:speedup": 20', ["suite.yaml:11", "reference.wide.val.mse:speedup",
                               "ratio, compute_ratio"]),
    ('"val.mse:compute_ratio": -1', ["suite.yaml:11", "a compute ratio is positive"]),
    ("compute_metrics: [val.mse, val.mse]", ["suite.yaml:6", "compute_metrics must be distinct"]),
])
def test_bad_compute_settings_are_located(tmp_path: Path, toy: None, new: str,
                                          expected: list[str]) -> None:
    old = "compute_metrics: [val.mse]" if "compute_metrics" in new else (
        '"val.mse:compute_ratio": 20')
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_FILE.replace(old, new))
    with pytest.raises(UserError) as err:
        load_suite(path, env={})
    for piece in expected:
        assert piece in str(err.value)


def test_a_power_law_that_fails_falls_back_to_log_linear_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_convergence(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(compute, "curve_fit", no_convergence)
    c = np.repeat(RUNGS, 3)
    fit = compute.fit_curve(c, 0.8 - 0.3 * (c / 1e15) ** -0.5, higher_is_better=True)
    assert fit is not None and fit.form == compute.LOG_LINEAR
    assert fit.reason == "the power law did not converge"


def test_an_interval_from_too_few_distinct_resamples_is_not_shown() -> None:
    assert [compute.distinct_resamples(n) for n in range(1, 6)] == [1, 3, 10, 35, 126]
    spec = _spec(baseline="base", variants=["base", "fast"])
    for seeds, shown in [(range(2), False), (range(5), True)]:
        points = _points({"base": BASE, "fast": FAST}, {"base": seeds, "fast": seeds})
        match = compute.compute_to_match(points, ["fast"], "base", higher_is_better=True)["fast"]
        assert match.distinct == compute.distinct_resamples(len(seeds))
        row = compute_section.match_table({"fast": match}, spec, "glue.score", "flops").rows[0]
        assert (row[2].text.startswith("[")) == shown
        assert shown or row[2].text == row[4].text == \
            f"not meaningful ({match.distinct} resamples)"
    # independent resamples (other seeds): the two variants' counts multiply
    points = _points({"base": BASE, "fast": FAST}, {"base": range(2), "fast": [2, 3, 4]})
    match = compute.compute_to_match(points, ["fast"], "base", higher_is_better=True)["fast"]
    assert (match.resampling, match.distinct) == ("independent", 3 * 10)


def test_a_match_resting_on_equal_means_is_a_tie() -> None:
    level = _line(0.60, 0.0)  # the target itself at every rung: reached at the first, exactly
    points = _points({"base": BASE, "flat": level}, {"base": range(1), "flat": range(1)})
    match = compute.compute_to_match(points, ["flat"], "base", higher_is_better=True)["flat"]
    assert match.tie and match.kind == compute.BOUND
    spec = _spec(baseline="base", variants=["base", "flat"])
    row = compute_section.match_table({"flat": match}, spec, "glue.score", "flops").rows[0]
    assert row[1].text.endswith(" (tie)") and row[3].text.startswith("≥ ×")
    fast = compute.compute_to_match(_points({"base": BASE, "fast": FAST}), ["fast"], "base",
                                    higher_is_better=True)["fast"]
    assert not fast.tie
