"""Report rendering from a hand-built results index with known values."""

import ast
import dataclasses
import json
import math
import re
import shutil
import sqlite3
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import weasyprint
from scipy import stats
from weasyprint.formatting_structure import boxes

import bench.report
from bench.config.suite import PaperTableConfig, load_suite
from bench.errors import UserError
from bench.report import (
    ReportSpec,
    formatting,
    layout,
    render_report,
    sections,
    spec_for,
    statistics,
)
from bench.report import render as render_mod
from bench.report.study import SweepSource
from bench.report.suite_data import SuiteData, load_suite_data
from bench.store.runs import Store

SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, suite TEXT, variant TEXT, seed INTEGER,
  state TEXT, reason TEXT, path TEXT, config TEXT, provenance TEXT, started TEXT, ended TEXT);
CREATE TABLE metrics (run_id TEXT, suite TEXT, variant TEXT, seed INTEGER,
  metric TEXT, value REAL, step INTEGER, flops REAL, tokens REAL);
"""
SUITES = Path(__file__).resolve().parents[1] / "suites"
SUITE = "cwt-demo"
VARIANTS = ["softmax", "cwt", "cwt_ft"]
# Finished runs only: variant -> metric -> one value per seed (seeds 0, 1, 2, ...).
VALUES = {
    "softmax": {"lambada.acc": [0.20, 0.21, 0.19], "lambada.ppl": [170.0, 165.0, 178.0]},
    "cwt": {"lambada.acc": [0.18, 0.185, 0.172], "lambada.ppl": [520.0, 531.0, 509.0]},
    "cwt_ft": {"lambada.acc": [0.22, 0.226], "lambada.ppl": [150.0, 156.0]},
}
ACC_STDERR = {"softmax": [0.0040, 0.0042, 0.0038], "cwt": [0.0039] * 3, "cwt_ft": [0.0041, 0.0043]}
# A paper-style table's metrics, fractions shown x100; cwt_ft records none of them.
SCORES = {
    "softmax": {"glue.mrpc.score": [0.85, 0.86, 0.87], "glue.cola.score": [0.54, 0.56, 0.52],
                "glue.score": [0.80, 0.805, 0.795]},
    "cwt": {"glue.mrpc.score": [0.84, 0.86, 0.88], "glue.cola.score": [0.57, 0.60, 0.60],
            "glue.score": [0.82, 0.83, 0.84]},
}
PARAMS = {"softmax": 1.1e8, "cwt": 7.0e7, "cwt_ft": 7.0e7}
TOKENS_PER_S = {"softmax": 12000.0, "cwt": 25560.0, "cwt_ft": 24000.0}  # plus the seed
REFERENCE = {
    "softmax": {"lambada.acc": 19.52, "lambada.ppl": 170.23, "glue.mrpc.score": 0.8587,
                "model.params:ratio": 1.0, "train.tokens_per_s:ratio": 1.0},
    "cwt": {"lambada.acc": 18.26, "lambada.ppl": 524.44, "glue.mrpc.score": 0.8531,
            "glue.score": 0.8329, "train.tokens_per_s:ratio": 2.13},
    "cwt_ft": {"lambada.acc": 22.2},
}
TABLE = PaperTableConfig(
    title="GLUE dev scores (paper Table 1)",
    columns=["glue.mrpc.score", "glue.cola.score", "glue.score"],
    labels={"glue.mrpc.score": "MRPC", "glue.score": "avg"},
    scale=100,
    ratios=["model.params", "train.tokens_per_s"],
)
FAILED_REASON = "non-finite loss at step 812"


def _provenance(seed: int, variant: str) -> str:
    return json.dumps(
        {
            "git_commit": "0123abcd4567",
            "git_dirty": False,
            "packages": {"torch": "2.14.1", "numpy": "2.4.0" if seed < 2 else "2.4.1"},
            "device": "cpu",
            "device_name": "Test CPU",
            "host": f"node{seed}",
            "python": "3.12.3",
            "started": f"2025-01-0{seed + 1}T10:00:00",
        }
    )


def build_index(path: Path) -> None:
    """Three variants x 2-3 finished seeds, one failed and one running run, curves for all."""
    runs, metrics = [], []
    for variant, per_metric in VALUES.items():
        for seed in range(len(per_metric["lambada.acc"])):
            run_id = f"{variant}-s{seed}-0123456789abcdef"
            runs.append(
                (
                    run_id,
                    SUITE,
                    variant,
                    seed,
                    "finished",
                    None,
                    f"results/{run_id}",
                    "{}",
                    _provenance(seed, variant),
                    f"2025-01-0{seed + 1}T10:00:00",
                    f"2025-01-0{seed + 1}T11:00:00",
                )
            )
            for metric, values in per_metric.items():
                metrics.append(
                    (run_id, SUITE, variant, seed, metric, values[seed], None, None, None)
                )
            final = {
                "lambada.acc_stderr": ACC_STDERR[variant][seed],
                "train.flops": 1.0e15 + seed * 1e13,
                "train.tokens": 2.0e8,
                "train.tokens_per_s": TOKENS_PER_S[variant] + seed,
                "model.params": PARAMS[variant],
                **{m: v[seed] for m, v in SCORES.get(variant, {}).items()},
            }
            for metric, value in final.items():
                metrics.append((run_id, SUITE, variant, seed, metric, value, None, None, None))
            for step in range(5):
                nll = 5.0 - 0.3 * step - 0.1 * VARIANTS.index(variant) + 0.01 * seed
                metrics.append(
                    (
                        run_id,
                        SUITE,
                        variant,
                        seed,
                        "curve.val_nll",
                        nll,
                        step * 100,
                        step * 2.5e14,
                        step * 5e7,
                    )
                )
    # A failed run with a wild value and a running one: neither may enter any mean.
    runs.append(
        (
            "cwt_ft-s2-failed",
            SUITE,
            "cwt_ft",
            2,
            "failed",
            FAILED_REASON,
            None,
            "{}",
            _provenance(2, "cwt_ft"),
            "2025-01-03T10:00:00",
            "2025-01-03T10:20:00",
        )
    )
    metrics.append(("cwt_ft-s2-failed", SUITE, "cwt_ft", 2, "lambada.acc", 0.99, None, None, None))
    metrics.append(("cwt_ft-s2-failed", SUITE, "cwt_ft", 2, "curve.val_nll", 99.0, 0, 0.0, 0.0))
    runs.append(
        (
            "softmax-s3-running",
            SUITE,
            "softmax",
            3,
            "running",
            None,
            None,
            "{}",
            None,
            "2025-01-04T10:00:00",
            None,
        )
    )
    # Another suite in the same index must not leak in.
    runs.append(
        ("other-run", "other", "softmax", 0, "finished", None, None, "{}", None, None, None)
    )
    metrics.append(("other-run", "other", "softmax", 0, "lambada.acc", 0.5, None, None, None))
    with sqlite3.connect(path) as con:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)", runs)
        con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", metrics)
    con.close()


def make_spec(**changes: object) -> ReportSpec:
    fields = {
        "suite": SUITE,
        "title": "CWT vs softmax (demo)",
        "baseline": "softmax",
        "metrics": ["lambada.acc", "lambada.ppl"],
        "higher_is_better": {"lambada.acc": True, "lambada.ppl": False},
        "reference": REFERENCE,
        "reference_source": "Godey et al. 2024, Table 3",
        "notes": ["LAMBADA here is a PROXY cut from held-out text"],
        "variants": VARIANTS,
        "table": TABLE,
    }
    return ReportSpec(**{**fields, **changes})


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results") / "index.sqlite"
    build_index(path)
    return path


@pytest.fixture(scope="module")
def data(index: Path) -> SuiteData:
    return load_suite_data(index, SUITE)


@pytest.fixture(scope="module")
def rendered(index: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The full HTML + PDF render, once for the module (the PDF is the slow part)."""
    return render_report(index, make_spec(), tmp_path_factory.mktemp("reports"))


def test_means_and_intervals_match_scipy(data: SuiteData) -> None:
    summary = statistics.summary_table(data, VARIANTS, ["lambada.acc", "lambada.ppl"], "softmax",
                                       {})
    for variant, per_metric in VALUES.items():
        for metric, values in per_metric.items():
            row = summary.loc[(variant, metric)]
            low, high = stats.t.interval(
                0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
            )
            assert row["n"] == len(values)
            assert row["mean"] == pytest.approx(np.mean(values))
            assert (row["low"], row["high"]) == pytest.approx((low, high))


def test_deltas_are_paired_by_seed_where_the_seeds_match_else_welch(
        data: SuiteData) -> None:
    """cwt finished the baseline's three seeds: paired; cwt_ft finished two of them: Welch."""
    summary = statistics.summary_table(data, VARIANTS, ["lambada.acc", "lambada.ppl"], "softmax",
                                       {})
    for metric in ("lambada.acc", "lambada.ppl"):
        b = VALUES["softmax"][metric]
        a = VALUES["cwt"][metric]
        paired = stats.ttest_rel(a, b)
        row = summary.loc[("cwt", metric)]
        assert row["delta_test"] == "paired"
        assert row["delta"] == pytest.approx(np.mean(np.subtract(a, b)))
        ci = paired.confidence_interval(0.95)
        assert (row["delta_low"], row["delta_high"]) == pytest.approx((ci.low, ci.high))
        assert row["delta_p"] == pytest.approx(paired.pvalue)
        a = VALUES["cwt_ft"][metric]
        welch = stats.ttest_ind(a, b, equal_var=False)
        row = summary.loc[("cwt_ft", metric)]
        assert row["delta_test"] == "Welch"
        assert row["delta"] == pytest.approx(np.mean(a) - np.mean(b))
        ci = welch.confidence_interval(0.95)
        assert (row["delta_low"], row["delta_high"]) == pytest.approx((ci.low, ci.high))
        assert row["delta_p"] == pytest.approx(welch.pvalue)
    assert math.isnan(summary.loc[("softmax", "lambada.acc"), "delta"])


def test_paired_and_welch_differ_where_seeds_share_their_luck() -> None:
    """Each seed shifts both variants alike: pairing removes that spread, Welch cannot."""
    luck = np.array([0.0, 0.3, -0.2, 0.5, -0.4])
    base, better = 0.5 + luck, 0.52 + luck + np.array([0.001, -0.001, 0.002, 0.0, -0.002])
    paired = statistics.paired_difference(better, base)
    welch = statistics.welch_difference(better, base)
    assert paired.value == pytest.approx(welch.value) == pytest.approx(0.02)
    assert paired.low > 0 and paired.p < 1e-3  # clearly better, seed by seed
    assert welch.low < 0 < welch.high and welch.p > 0.5  # lost in the seeds' spread
    assert (paired.test, welch.test) == ("paired", "Welch")
    assert paired.p == pytest.approx(stats.ttest_rel(better, base).pvalue)
    assert welch.p == pytest.approx(stats.ttest_ind(better, base, equal_var=False).pvalue)


def test_single_seed_has_a_value_but_no_interval() -> None:
    est = statistics.seed_interval([0.3])
    assert est.value == 0.3
    assert math.isnan(est.low) and math.isnan(est.high)
    assert formatting.fmt_interval(est.value, est.low, est.high, 1) == "0.3000 (n=1)"
    assert math.isnan(statistics.welch_difference([0.3], [0.1, 0.2]).low)


def test_reference_and_stderr_sit_beside_their_variant(data: SuiteData) -> None:
    summary = statistics.summary_table(data, VARIANTS, ["lambada.acc", "lambada.ppl"], None,
                                       REFERENCE)
    assert summary.loc[("cwt", "lambada.acc"), "reference"] == 18.26
    assert summary.loc[("softmax", "lambada.ppl"), "reference"] == 170.23
    assert math.isnan(summary.loc[("cwt_ft", "lambada.ppl"), "reference"])
    assert summary.loc[("softmax", "lambada.acc"), "stderr"] == pytest.approx(0.004)
    assert math.isnan(summary.loc[("softmax", "lambada.ppl"), "stderr"])


def test_failed_and_running_runs_are_listed_not_averaged(data: SuiteData) -> None:
    summary = statistics.summary_table(data, VARIANTS, ["lambada.acc"], None, {})
    assert summary.loc[("cwt_ft", "lambada.acc"), "n"] == 2
    assert summary.loc[("cwt_ft", "lambada.acc"), "mean"] == pytest.approx(0.223)
    assert data.curves["value"].max() < 99.0
    assert "other-run" not in set(data.runs["run_id"])
    unfinished = statistics.unfinished_table(data, VARIANTS)
    assert list(unfinished["run_id"]) == ["softmax-s3-running", "cwt_ft-s2-failed"]
    assert unfinished.loc[1, "reason"] == FAILED_REASON


def test_per_seed_table_shows_every_finished_seed(data: SuiteData) -> None:
    table = statistics.per_seed_table(data, VARIANTS, ["lambada.acc", "lambada.ppl"])
    assert list(zip(table["variant"], table["seed"], strict=True)) == [
        (v, s) for v in VARIANTS for s in range(len(VALUES[v]["lambada.acc"]))
    ]
    assert list(table.loc[table["variant"] == "cwt", "lambada.ppl"]) == VALUES["cwt"]["lambada.ppl"]
    assert "lambada.acc_stderr" in table.columns and "lambada.ppl_stderr" not in table.columns


def test_main_table_marks_better_and_worse_deltas(data: SuiteData) -> None:
    spec = make_spec()
    summary = statistics.summary_table(data, VARIANTS, spec.metrics, "softmax", REFERENCE)
    table = sections.main_table(spec, VARIANTS, summary, statistics.compute_table(data, VARIANTS))
    by_variant = {row[0].text: row for row in table.rows}
    assert list(by_variant) == VARIANTS
    delta_acc = table.columns.index("Δ vs softmax (95% CI, test)")
    assert "worse" in by_variant["cwt"][delta_acc].cls
    assert "better" in by_variant["cwt_ft"][delta_acc].cls
    assert by_variant["softmax"][delta_acc].text == "baseline"
    # Lower perplexity is better: cwt's much higher ppl is worse, and clearly so.
    delta_ppl = len(table.columns) - 1 - table.columns[::-1].index("Δ vs softmax (95% CI, test)")
    assert "worse" in by_variant["cwt"][delta_ppl].cls
    assert "clear" in by_variant["cwt"][delta_ppl].cls
    assert by_variant["cwt"][table.columns.index("paper")].text == "18.26"
    assert by_variant["cwt"][table.columns.index("FLOPs")].text == "1.010e+15"


def test_number_formats() -> None:
    assert formatting.fmt_value(0.195234) == "0.1952"
    assert formatting.fmt_value(170.234) == "170.23"
    assert formatting.fmt_value(6.0e18) == "6.000e+18"
    assert formatting.fmt_sci(1.5e8) == "1.500e+08"
    assert formatting.fmt_signed(-0.0123) == "−0.0123"
    assert formatting.fmt_value(float("nan")) == formatting.DASH


def test_provenance_lists_shared_fields_once(data: SuiteData) -> None:
    shared, per_run = sections.provenance_tables(statistics.provenance_table(data, VARIANTS))
    assert dict(shared) == {"commit": "0123abcd4567", "device": "Test CPU", "python": "3.12.3"}
    assert "host" in per_run.columns and "commit" not in per_run.columns
    assert len(per_run.rows) == len(data.runs)


class _Collect(HTMLParser):
    """Rows of one table (by class, the main one unless told) and every resource-bearing
    attribute."""

    def __init__(self, table_class: str = "main") -> None:
        super().__init__()
        self.table_class = table_class
        self.in_main = self.in_body = False
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "srcset")]
        if tag == "table" and ("class", self.table_class) in attrs:
            self.in_main = True
        elif self.in_main and tag == "tbody":
            self.in_body = True
        elif self.in_body and tag == "tr":
            self.rows.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_main = self.in_body = False

    def handle_data(self, text: str) -> None:
        if self.in_body and self.rows and text.strip():
            self.rows[-1].append(text.strip())


def test_html_is_self_contained_with_a_row_per_variant(rendered: tuple[Path, Path]) -> None:
    html_path, _ = rendered
    html = html_path.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(html)
    # the main table is wider than a portrait page: two parts, each naming every variant
    assert [row[0] for row in parser.rows] == VARIANTS * 2
    assert html.count("<svg") == 2
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    # in-page anchors, and the files of its tables written beside it
    tables = [link for link in parser.links if not link.startswith("#")]
    assert tables and all(link.startswith(f"{SUITE}-tables/") for link in tables)
    assert all((html_path.parent / link).is_file() for link in tables)
    assert not re.search(r"url\(\s*['\"]?\w+:|@import", html)
    assert html.index("PROXY") < html.index('class="main"')
    assert FAILED_REASON in html and "cwt_ft-s2-fa" in html
    assert "Godey et al. 2024, Table 3" in html
    assert "numpy 2.4.0 (6 runs), 2.4.1 (3 runs)" in html  # runs differ: all versions shown
    assert "0123abcd4567" in html


def test_html_is_a_pure_function_of_the_index(index: Path, data: SuiteData) -> None:
    first = render_mod.render_html(index, make_spec(), data)
    assert render_mod.render_html(index, make_spec(), load_suite_data(index, SUITE)) == first


def pdf_chunks(blob: bytes) -> list[bytes]:
    """A PDF's bytes and the contents of its compressed streams, to search in. Each stream is
    cut by its dictionary's /Length (as WeasyPrint writes it), not by the next "endstream":
    compressed bytes may end in a carriage return, or hold "stream" themselves."""
    chunks = [blob]
    for match in re.finditer(rb"\d+ \d+ obj\s*<<(.*?)>>\s*stream\r?\n", blob, re.S):
        length = re.search(rb"/Length (\d+)", match.group(1))
        if length is None:
            continue
        data = blob[match.end():match.end() + int(length.group(1))]
        try:
            chunks.append(zlib.decompress(data))
        except zlib.error:
            continue
    return chunks


def _pdf_pages(blob: bytes) -> int:
    """Count page objects."""
    return sum(len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", chunk)) for chunk in pdf_chunks(blob))


def test_pdf_is_written_with_pages(rendered: tuple[Path, Path]) -> None:
    html_path, pdf_path = rendered
    blob = pdf_path.read_bytes()
    assert blob.startswith(b"%PDF")
    assert _pdf_pages(blob) > 0
    assert sorted(p.name for p in pdf_path.parent.iterdir()) == [
        f"{SUITE}-tables", html_path.name, pdf_path.name]
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", str(pdf_path), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert "CWT vs softmax (demo)" in text and "cwt_ft" in text
        assert "GLUE dev scores (paper Table 1)" in text and "softmax (paper)" in text


def test_missing_index_names_path_and_suite(tmp_path: Path) -> None:
    missing = tmp_path / "index.sqlite"
    with pytest.raises(UserError, match=rf"{re.escape(str(missing))}.*{SUITE}"):
        render_report(missing, make_spec(), tmp_path / "out")


def test_suite_without_finished_runs_is_a_user_error(index: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"suite 'nothing-here' has no finished runs"):
        render_report(index, make_spec(suite="nothing-here"), tmp_path)
    with pytest.raises(UserError, match=r"report.baseline .* 'headed'"):
        render_report(index, make_spec(baseline="headed"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_paper_table_means_intervals_and_ratios(data: SuiteData) -> None:
    frame = statistics.paper_table(data, VARIANTS, TABLE.columns, TABLE.ratios, "softmax",
                                   REFERENCE)
    assert list(frame.index) == VARIANTS
    for variant, per_metric in SCORES.items():
        for metric, values in per_metric.items():
            low, high = stats.t.interval(
                0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
            )
            assert frame.loc[variant, (metric, "mean")] == pytest.approx(np.mean(values))
            assert frame.loc[variant, (metric, "half")] == pytest.approx((high - low) / 2)
            assert frame.loc[variant, (metric, "n")] == 3
    assert frame.loc["cwt_ft", ("glue.score", "n")] == 0
    assert math.isnan(frame.loc["cwt_ft", ("glue.score", "mean")])
    seeds = {v: np.arange(len(VALUES[v]["lambada.acc"])) for v in VARIANTS}
    for variant in VARIANTS:
        rate = np.mean(TOKENS_PER_S[variant] + seeds[variant]) / np.mean(12000.0 + seeds["softmax"])
        assert frame.loc[variant, ("train.tokens_per_s", "ratio")] == pytest.approx(rate)
        ratio = PARAMS[variant] / PARAMS["softmax"]
        assert frame.loc[variant, ("model.params", "ratio")] == pytest.approx(ratio)
    assert frame.loc["cwt", ("train.tokens_per_s", "ratio")] == pytest.approx(25561 / 12001)
    assert frame.loc["cwt", ("glue.mrpc.score", "reference")] == 0.8531
    assert math.isnan(frame.loc["cwt", ("glue.cola.score", "reference")])
    assert frame.loc["cwt", ("train.tokens_per_s", "reference_ratio")] == 2.13
    assert math.isnan(frame.loc["cwt", ("model.params", "reference_ratio")])
    assert math.isnan(frame.loc["cwt_ft", ("model.params", "reference_ratio")])


def test_paper_ratios_are_nan_without_a_usable_baseline(data: SuiteData) -> None:
    # Baseline without the metric, no baseline, and a baseline mean of 0.
    no_scores = statistics.paper_table(data, VARIANTS, ["glue.score"], ["glue.score"], "cwt_ft", {})
    assert no_scores[("glue.score", "ratio")].isna().all()
    no_base = statistics.paper_table(data, VARIANTS, ["glue.score"], ["model.params"], None, {})
    assert no_base[("model.params", "ratio")].isna().all()
    finals = data.finals.copy()
    finals.loc[finals["metric"] == "model.params", "value"] = 0.0
    zero = statistics.paper_table(
        dataclasses.replace(data, finals=finals), VARIANTS, ["glue.score"], ["model.params"],
        "softmax", {},
    )
    assert zero[("model.params", "ratio")].isna().all()


def test_comparison_cells_are_scaled_with_paper_rows(rendered: tuple[Path, Path]) -> None:
    html = rendered[0].read_text(encoding="utf-8")
    assert html.index("GLUE dev scores (paper Table 1)") < html.index('class="main"')
    header = re.search(r'<table class="comparison">.*?</thead>', html, re.S).group(0)
    assert re.findall(r"<th>(.*?)</th>", header) == [
        "variant", "MRPC", "glue.cola.score", "avg", "model.params ×", "train.tokens_per_s ×"
    ]
    parser = _Collect("comparison")
    parser.feed(html)
    dash = formatting.DASH
    # Hand-computed: mean x100 ± t(0.975, 2) * sd / sqrt(3) x100.
    assert parser.rows == [
        ["softmax", "86.00 ± 2.4841", "54.00 ± 4.9683", "80.00 ± 1.2421", "×1.00", "×1.00"],
        ["softmax (paper)", "85.87", dash, dash, "×1.00", "×1.00"],
        ["cwt", "86.00 ± 4.9683", "59.00 ± 4.3027", "83.00 ± 2.4841", "×0.64", "×2.13"],
        ["cwt (paper)", "85.31", dash, "83.29", dash, "×2.13"],
        ["cwt_ft", dash, dash, dash, "×0.64", "×2.00"],
    ]
    assert '<td class="paper">cwt (paper)</td>' in html
    assert "<em>(paper)</em> rows: the numbers of Godey et al. 2024, Table 3" in html


def test_wide_comparison_turns_the_pdf_page(index: Path, data: SuiteData) -> None:
    narrow = make_spec(metrics=["lambada.ppl"])
    assert "size: A4;" in render_mod.render_html(index, narrow, data)
    many = [f"task{i}.score" for i in range(layout.WIDE_COLUMNS)]
    wide = make_spec(metrics=["lambada.ppl"], table=PaperTableConfig(columns=many, ratios=[]))
    html = render_mod.render_html(index, wide, data)
    assert "size: A4 landscape;" in html and "<h2>Comparison</h2>" in html


def test_mean_half_and_ratio_formats() -> None:
    assert formatting.fmt_mean_half(30.0, math.nan) == "30.00"  # one seed: the mean alone
    assert formatting.fmt_mean_half(math.nan, math.nan) == formatting.DASH
    assert formatting.fmt_mean_half(0.8, 0.012) == "0.8000 ± 0.0120"
    assert formatting.fmt_ratio(1.5714) == "×1.57"
    assert formatting.fmt_ratio(math.nan) == formatting.DASH


SUITE_FILE = """\
suite: paper-table
family: lm
seeds: [0]
budget: {flops: 1.0e+12}
model: {preset: micro}
data: {train: /data/train.jsonl, seq_len: 32, tokenizer: {train_bpe: 300}}
train: {batch_size: 4, optim: {lr: 1.0e-3}}
objective: softmax
evals:
  - lambada: {path: /data/cloze.jsonl}
variants:
  softmax: {}
  cwt: {objective: cwt, head: embedding_transpose}
report:
  baseline: softmax
  table:
    title: "Paper table"
    columns: [lambada.acc, lambada.ppl]
    labels: {lambada.acc: accuracy}
    scale: 100
    ratios: [model.total_params]
reference:
  cwt: {lambada.acc: 0.2281, "model.total_params:ratio": 1.0}
"""


def test_suite_table_reaches_the_report_spec(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_FILE)
    table = load_suite(path, env={}).head.report.table
    assert table is not None and table.scale == 100.0 and table.ratios == ["model.total_params"]
    assert reported_spec(path, tmp_path).table == table


def reported_spec(path: Path, results: Path) -> ReportSpec:
    """The ReportSpec `bench report` makes of the suite file at `path` (nothing rendered)."""
    return spec_for(load_suite(path, env={}), results)


def test_a_suite_asks_its_report_for_notes_directions_and_its_study(
        tmp_path: Path, suite_env: None) -> None:
    lm = spec_for(load_suite(SUITES / "demo" / "lm.yaml"), tmp_path)
    assert lm.proxies == ["lambada"] and lm.notes == [
        "'lambada' is scored on a PROXY data set built from freely available text, not on the "
        "benchmark itself: compare variants with each other, not with published numbers.",
        "softmax, cwt, cwt_ft trained on a ladder of budgets: the tables compare each variant "
        "at its largest budget."]
    assert lm.higher_is_better == {"lambada.acc": True, "lambada.ppl": False, "val.nll": False}
    assert (lm.title, lm.baseline, lm.curve, lm.item_unit, lm.sweep) == (
        "Softmax head vs CWT, tiny GPT-NeoX, offline demo", "softmax", "curve.val_nll", "tokens",
        None)
    sweep = load_suite(SUITES / "demo" / "sweep.yaml")
    source = spec_for(sweep, tmp_path, None, "bench sweep sweep.yaml").sweep
    assert source == SweepSource(
        study="demo-sweep.sweep", storage=str(tmp_path / "sweeps" / "demo-sweep.sweep.journal"),
        metric="val.nll", direction="minimize", params=["cwt.temperature", "train.optim.lr"],
        trials=12, reported="val_nll", command="bench sweep sweep.yaml")
    given = spec_for(sweep, tmp_path, "sqlite:///study.db").sweep
    assert given is not None and given.storage == "sqlite:///study.db"


def _sql_statements(path: Path) -> list[str]:
    """The texts in a module that read as SQL (a keyword in capitals), and `sqlite3` if it is
    imported."""
    tree = ast.parse(path.read_text())
    keyword = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE)\b")
    texts = [n.value for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    found = [text for text in texts if keyword.search(text)]
    imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imports += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    return found + [m for m in imports if m.split(".")[0] == "sqlite3"]


def test_the_report_reads_the_index_only_through_the_store() -> None:
    report = Path(bench.report.__file__).parent
    assert _sql_statements(report.parents[0] / "store" / "queries.py")  # the rule sees a query
    for path in sorted(report.glob("*.py")):
        assert _sql_statements(path) == [], path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # A block mapping is placed at its first key: the table's title line.
        (("  baseline: softmax\n", ""), ["suite.yaml:16", "report.table", "report.baseline"]),
        (("labels: {lambada.acc: accuracy}", "labels: {lambada.acx: accuracy}"),
         ["suite.yaml:17", "report.table", "lambada.acx"]),
        (("scale: 100", "scale: 0"), ["suite.yaml:20", "report.table.scale", "greater than 0"]),
        (("    ratios", "    ratio"), ["suite.yaml:21", "report.table.ratio", "unknown key"]),
        (("columns: [lambada.acc, lambada.ppl]", "columns: [lambada.acc, lambada.pp]"),
         ["suite.yaml:18", "report.table.columns[1]", "did you mean 'lambada.ppl'?"]),
    ],
)
def test_bad_table_settings_are_located(
    tmp_path: Path, change: tuple[str, str], expected: list[str]
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_FILE.replace(*change))
    with pytest.raises(UserError) as err:
        load_suite(path, env={})
    for piece in expected:
        assert piece in str(err.value)


def test_ratios_without_a_baseline_render_nothing(index: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"report.table.ratios .* need report.baseline"):
        render_report(index, make_spec(baseline=None), tmp_path)
    assert not list(tmp_path.iterdir())


# Training efficiency: two GPU runs of softmax (FLOP/s, MFU, peak memory) and one CPU run of cwt
# (FLOP/s only); the family counts images.
EFFICIENCY_RUNS = {
    ("softmax", 0): {"train.flops_per_s": 3.0e14, "train.mfu": 0.30,
                     "train.peak_memory_bytes": 10 * 2**30, "train.images_per_s": 400.0},
    ("softmax", 1): {"train.flops_per_s": 3.2e14, "train.mfu": 0.32,
                     "train.peak_memory_bytes": 12 * 2**30, "train.images_per_s": 420.0},
    ("cwt", 0): {"train.flops_per_s": 2.0e10, "train.images_per_s": 3.0},
}


def _efficiency_store(root: Path, runs: dict[tuple[str, int], dict[str, float]]) -> Path:
    """A results store whose finished runs recorded the given final metrics."""
    store = Store(root)
    for (variant, seed), metrics in runs.items():
        run_id = f"{variant}-{seed}"
        store.begin(SUITE, variant, seed, run_id, {}, {"started": "2025-01-01"})
        store.finish(run_id, {"acc": 0.5, "train.flops": 1e15, **metrics}, [], {}, {})
    return root / "index.sqlite"


def _efficiency_spec(variants: list[str]) -> ReportSpec:
    return make_spec(metrics=["acc"], higher_is_better={"acc": True}, reference={},
                     variants=variants, table=None, item_unit="images", curve="curve.loss")


def _table_rows(html: str, cls: str) -> tuple[list[str], list[list[str]]]:
    """Header labels and cell texts of the HTML table of class `cls`."""
    body = re.search(rf'<table class="{cls}">(.*?)</table>', html, re.S)
    assert body is not None, f"no table of class {cls}"
    header = re.findall(r"<th>(.*?)</th>", body.group(1))
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1).split("<tbody>")[1], re.S)]
    return header, rows


def test_efficiency_table_means_per_variant(tmp_path: Path) -> None:
    index = _efficiency_store(tmp_path, EFFICIENCY_RUNS)
    frame = statistics.efficiency_table(load_suite_data(index, SUITE), ["softmax", "cwt"],
                                    "images")
    assert list(frame.columns) == ["train.flops_per_s", "train.mfu", "train.images_per_s",
                                   "train.peak_memory_bytes"]
    assert frame.loc["softmax"].tolist() == pytest.approx([3.1e14, 0.31, 410.0, 11 * 2**30])
    assert frame.loc["cwt", "train.flops_per_s"] == pytest.approx(2.0e10)
    assert math.isnan(frame.loc["cwt", "train.mfu"])  # a CPU run has no MFU


def test_efficiency_table_in_html_and_pdf(tmp_path: Path) -> None:
    index = _efficiency_store(tmp_path, EFFICIENCY_RUNS)
    html_path, pdf_path = render_report(index, _efficiency_spec(["softmax", "cwt"]),
                                        tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    header, rows = _table_rows(html, "efficiency")
    assert header == ["variant", "FLOP/s", "MFU", "images/s", "peak memory"]
    assert rows == [["softmax", "3.100e+14", "31.0%", "410", "11.00 GiB"],
                    ["cwt", "2.000e+10", formatting.DASH, "3", formatting.DASH]]
    assert "Training efficiency" in html and "<em>MFU</em>" in html
    assert {"MFU", "31.0%", "11.00 GiB", "2.000e+10"} <= _laid_out_texts(html, "efficiency")
    assert pdf_path.read_bytes().startswith(b"%PDF")


def _laid_out_texts(html: str, cls: str) -> set[str]:
    """Texts of the cells of tables of class `cls` that the PDF layout placed on a page."""
    texts = set()
    for page in weasyprint.HTML(string=html).render().pages:
        stack = [page._page_box]
        while stack:
            box = stack.pop()
            if isinstance(box, boxes.TableBox) and box.element.get("class") == cls:
                texts |= {el.text for el in box.element.iter() if el.tag in ("td", "th")}
            stack.extend(getattr(box, "children", []))
    return texts


def test_cpu_runs_show_no_mfu_or_memory_columns(tmp_path: Path) -> None:
    index = _efficiency_store(tmp_path, {("cwt", 0): EFFICIENCY_RUNS["cwt", 0]})
    html = render_mod.render_html(index, _efficiency_spec(["cwt"]),
                                  load_suite_data(index, SUITE))
    header, rows = _table_rows(html, "efficiency")
    assert header == ["variant", "FLOP/s", "images/s"]
    assert rows == [["cwt", "2.000e+10", "3"]]
    assert "<em>MFU</em>" not in html and "<em>peak memory</em>" not in html


def test_runs_without_efficiency_figures_have_no_efficiency_section(
        data: SuiteData, rendered: tuple[Path, Path]) -> None:
    assert statistics.efficiency_table(data, VARIANTS) is None  # tokens/s alone: the main table's
    html = rendered[0].read_text(encoding="utf-8")
    assert "Training efficiency" not in html and 'class="efficiency"' not in html


def test_a_ratios_per_seed_range_pairs_seeds_where_it_can(data: SuiteData) -> None:
    frame = statistics.paper_table(data, VARIANTS, [], ["train.tokens_per_s"], "softmax", {})
    rate = {v: [TOKENS_PER_S[v] + s for s in range(len(VALUES[v]["lambada.acc"]))]
            for v in VARIANTS}
    paired = [c / b for c, b in zip(rate["cwt"], rate["softmax"], strict=True)]
    cwt = frame.loc["cwt"]
    assert (cwt[("train.tokens_per_s", "ratio_min")], cwt[("train.tokens_per_s", "ratio_max")]
            ) == (pytest.approx(min(paired)), pytest.approx(max(paired)))
    # cwt_ft finished seeds 0 and 1 of the baseline's three: over the baseline's mean
    ft = frame.loc["cwt_ft"]
    base = np.mean(rate["softmax"])
    assert ft[("train.tokens_per_s", "ratio_max")] == pytest.approx(max(rate["cwt_ft"]) / base)
    assert sections.ratios_table(frame).rows[1][2].text == \
        f"×{min(paired):.2f}–×{max(paired):.2f}"


def test_figures_name_the_curve_in_words_and_draw_perplexity_on_a_log_axis(
        index: Path, data: SuiteData) -> None:
    html = render_mod.render_html(index, make_spec(), data)
    assert "validation NLL (nats per predicted token) (<code>curve.val_nll</code>)" in html
    assert "lambada.ppl (log axis)" in html and "lambada.acc (log axis)" not in html
    assert formatting.curve_label("curve.val_nll") == "validation NLL (nats per predicted token)"
    assert formatting.curve_label("curve.val_mse") == "val mse"
    assert formatting.is_perplexity("lambada.ppl") and not formatting.is_perplexity("glue.score")
