"""Hostile values, texts, names, settings and output paths on their way to a report, and the
evaluators' --json/--plot outputs: each ends in exit 2 with one `error:` line naming the file
and field (or the path, before any work is done), or in a report whose content is right; never
a traceback or a warning. And every metric a run records has a deliberate direction."""

import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from test_family_contract import _toy_suite
from test_hostile_evals import fddb, glue, pascal, root, wider  # noqa: F401 (root: a fixture)
from test_report import _laid_out_texts

import bench.report
from bench.cli import main
from bench.config.suite import load_suite
from bench.execution.runner import _training_metrics
from bench.report import ReportSpec, compute, sections, statistics
from bench.report import render as render_mod
from bench.report.suite_data import load_suite_data
from bench.store.runs import Store

SUITES = Path(__file__).resolve().parents[1] / "suites"
BUDGETS = (10, 20, 40)
SUITE = """suite: hx
family: toy
seeds: [0, 1]
budget: {steps: [10, 20, 40]}
optim: {lr: 0.05, schedule: wsd, warmup: 2, decay: 0.2}
evals: []
report:
  baseline: narrow
  metrics: [val.mse, train.train.final_loss]
  compute_metrics: [val.mse, train.train.final_loss]
variants:
  narrow: {}
  wide: {width: 16}
"""
ZWSP = "\u200b"


pytestmark = pytest.mark.usefixtures("toy")


def _sub(*pairs: str) -> str:
    """SUITE with pieces replaced (old, new, old, new, ...)."""
    text = SUITE
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _metrics(variant: str, seed: int, budget: int) -> dict[str, float]:
    """What a toy run records, made up: wide learns faster; each seed adds its own luck. At its
    smallest rung wide's final loss (2.2) already beats narrow's at its largest (2.25)."""
    wide = variant == "wide"
    return {"val.mse": (0.5 if wide else 1.0) / budget + (0.002 if wide else 0.001) * seed,
            "train.train.final_loss": 2.0 + (2.0 if wide else 10.0) / budget + 0.01 * seed,
            "train.steps": float(budget), "train.rows_per_s": 100.0 + seed}


Change = Callable[[str, int, int, dict[str, float]], None]


def _store(results: Path, change: Change | None = None,
           failures: tuple[tuple[str, str], ...] = (), extra: str | None = None) -> None:
    """Finished runs of every variant, seed and rung (their metrics edited by `change`), failed
    runs of wide with the given (run id, reason), and a finished run of a variant `extra` that
    the suite does not name."""
    store = Store(results)
    for variant in ("narrow", "wide"):
        for seed in (0, 1):
            for budget in BUDGETS:
                metrics = _metrics(variant, seed, budget)
                if change is not None:
                    change(variant, seed, budget, metrics)
                run_id = f"{variant}-{seed}-{budget}"
                store.begin("hx", variant, seed, run_id, {"budget": {"steps": budget}},
                            {"started": "2025-01-01"})
                store.finish(run_id, metrics, [], {})
    for run_id, reason in failures:
        store.begin("hx", "wide", 7, run_id, {"budget": {"steps": 40}}, {})
        store.fail(run_id, reason, "2025-01-02")
    if extra is not None:
        store.begin("hx", extra, 0, "extra-0", {"budget": {"steps": 40}}, {})
        store.finish("extra-0", _metrics("narrow", 0, 40), [], {})


def _report_html(suite: Path, results: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The HTML `bench report` makes of `suite` (its PDF, laid out by other tests, is left
    out: its spec is taken where `bench report` hands it to the renderer)."""
    specs: list[tuple[Path, ReportSpec]] = []

    def capture(index_path: Path, spec: ReportSpec, out_dir: Path) -> tuple[Path, Path]:
        specs.append((index_path, spec))
        return out_dir / "x.html", out_dir / "x.pdf"

    with monkeypatch.context() as m:
        m.setattr(bench.report, "render_report", capture)
        assert main(["report", str(suite), "--results", str(results), "--out",
                     str(suite.parent / "out")]) == 0
    index, spec = specs[0]
    data = load_suite_data(index, spec.suite, curves=[spec.curve])
    return render_mod.render_html(index, spec, data)


def _value(metric: str, value: float, variants: tuple[str, ...] = ("narrow", "wide"),
           seeds: tuple[int, ...] = (0, 1), budgets: tuple[int, ...] = BUDGETS) -> Change:
    """A change setting `metric` to `value` in the chosen runs."""
    def change(variant: str, seed: int, budget: int, metrics: dict[str, float]) -> None:
        if variant in variants and seed in seeds and budget in budgets:
            metrics[metric] = value
    return change


def _shift(variant: str, seed: int, budget: int, metrics: dict[str, float]) -> None:
    """wide scores exactly 0.125 below narrow on every seed (binary fractions: no rounding)."""
    metrics["val.mse"] = 0.5 + 0.25 * seed - (0.125 if variant == "wide" else 0.0)


def _counts(variant: str, seed: int, budget: int, metrics: dict[str, float]) -> None:
    """wide consumed 1e300 rows in every run, and one of its runs 1e300 steps."""
    if variant == "wide":
        metrics["train.rows"] = 1e300
        metrics["train.steps"] = 1e300 if (seed, budget) == (1, 40) else metrics["train.steps"]


@dataclass(frozen=True)
class Rendered:
    """A store and suite that make a report: what its HTML must and must not hold."""

    says: list[str]
    never: list[str] = field(default_factory=list)
    change: Change | None = None
    suite: str = SUITE
    failures: tuple[tuple[str, str], ...] = ()
    extra: str | None = None


LONG_REASON = "RuntimeError: " + "y" * 100_000
RENDERED = {
    # metric values reaching tables, figures, fits and compute to match
    "NaN in one run": Rendered(
        ["1 value is not drawn", "1 finished run is left out of this figure"],
        change=_value("val.mse", math.nan, ("wide",), (1,), (40,))),
    "+inf in every seed": Rendered(
        ["inf (n=2)", "+inf (paired)", "2 values are not drawn"],
        change=_value("val.mse", math.inf, ("wide",), budgets=(40,))),
    "-inf in one seed": Rendered(
        ["-inf (n=2)", "−inf (paired)"], change=_value("val.mse", -math.inf, ("wide",), (0,))),
    "1e308 in every run of a variant": Rendered(
        ["1.000e+308 ± 0.0000", "+1.000e+308 (paired; no spread, p undefined)",
         "6 finished runs are left out"], change=_value("val.mse", 1e308, ("wide",))),
    "values of 1e140, drawn and fitted": Rendered(
        ['<table class="fits">', "Compute to match: val.mse"], ["left out", "not drawn"],
        change=lambda v, s, b, m: m.update({"val.mse": m["val.mse"] * 1e140})),
    "-1e308 against +1e308": Rendered(
        ["-1.000e+308 ± 0.0000", "+inf (paired)", "12 finished runs are left out"],
        change=lambda v, s, b, m: m.update({"val.mse": 1e308 if v == "wide" else -1e308})),
    "0 in every run": Rendered(
        ["0.0000 ± 0.0000", "+0.0000 (paired; no spread, p undefined)", "<em>no spread</em>"],
        change=_value("val.mse", 0.0)),
    "the same difference on every seed": Rendered(
        ['class="num better">−0.1250 (paired; no spread, p undefined)', "<em>no spread</em>"],
        ["better clear"], change=_shift),
    "a negative compute": Rendered(
        ["1 finished run is left out"],
        change=_value("train.steps", -10.0, ("narrow",), (0,), (10,))),
    "a count of 1e300": Rendered(
        ['<td class="num">1.000e+300</td>', "1 finished run is left out"], change=_counts),
    "a throughput of -1e308": Rendered(
        ["-1.000e+308"], ["-100,000,000"], change=_value("train.rows_per_s", -1e308)),
    "a metric no rule gives a direction": Rendered(
        ["No better direction for val.r2"],
        suite=_sub("metrics: [val.mse, train.train.final_loss]",
                   "metrics: [val.mse, val.r2]"),
        change=lambda v, s, b, m: m.update({"val.r2": 0.9 - 0.01 * s})),
    "a report metric no run recorded": Rendered(
        ["No finished run recorded val.mes", "No better direction for val.mes"],
        suite=_sub("metrics: [val.mse, train.train.final_loss]", "metrics: [val.mes]")),
    # names that reach the HTML
    "a metric name with markup": Rendered(
        ["val.&lt;b&gt;&amp;x"], ["val.<b>"],
        suite=_sub("metrics: [val.mse, train.train.final_loss]", "metrics: ['val.<b>&x']"),
        change=lambda v, s, b, m: m.update({"val.<b>&x": 0.5})),
    "a variant name with markup in the index": Rendered(
        ["&lt;i&gt;x&lt;/i&gt;"], ["<i>x</i>"], extra="<i>x</i>"),
    # reasons of failed runs
    "a reason of 100,000 characters": Rendered(
        ["cut at 600 of 100,014 characters; full reason in", "/wide-long/state.json)"],
        ["y" * 700], failures=(("wide-long", LONG_REASON),)),
    "a reason of one unbroken token": Rendered(
        ["y" * 30 + ZWSP + "y" * 30], ["y" * 31], failures=(("wide-token", "y" * 500),)),
    "a reason with markup": Rendered(
        ["&lt;script&gt;alert(1)&lt;/script&gt;"], ["<script>"],
        failures=(("wide-markup", "<script>alert(1)</script>"),)),
    "a reason with control characters": Rendered(
        ["bad \\x1b[31m \\x00 \\x07 end"], ["\x1b", "\x00"],
        failures=(("wide-control", "bad \x1b[31m \x00 \x07 end"),)),
    # suite text YAML can give (run folders and the index hold no lone surrogates)
    "a title with a lone surrogate and a control character": Rendered(
        ["café \ufffd \\x1b[31m end"], ["\ud800", "\x1b"],
        suite=_sub("report:\n", 'report:\n  title: "café \\ud800 \\e[31m end"\n')),
}


@pytest.mark.parametrize("case", list(RENDERED))
def test_hostile_store_content_is_reported_right(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = RENDERED[case]
    suite = tmp_path / "suite.yaml"
    suite.write_text(spec.suite)
    _store(tmp_path / "results", spec.change, spec.failures, spec.extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        html = _report_html(suite, tmp_path / "results", monkeypatch)
    assert [str(w.message) for w in caught if w.category is not DeprecationWarning] == []
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    html = " ".join(html.split())
    for piece in spec.says:
        assert piece in html, piece
    for piece in spec.never:
        assert piece not in html, piece


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _file(path: Path) -> Path:
    path.write_text("keep me\n")
    return path


def _validate(text: str) -> Callable[[Path], tuple[list[str], list[str]]]:
    def case(tmp: Path) -> tuple[list[str], list[str]]:
        (tmp / "suite.yaml").write_text(text)
        return ["validate", str(tmp / "suite.yaml")], ["suite.yaml"]
    return case


def _report_to(out: Callable[[Path], Path]) -> Callable[[Path], tuple[list[str], list[str]]]:
    """`bench report --out` somewhere hostile; its results folder does not exist yet."""
    def case(tmp: Path) -> tuple[list[str], list[str]]:
        (tmp / "suite.yaml").write_text(SUITE)
        target = out(tmp)
        return (["report", str(tmp / "suite.yaml"), "--results", str(tmp / "results"),
                 "--out", str(target)], ["--out", str(target)])
    return case


def _eval(argv: Callable[[Path], list[str]], option: str, out: Callable[[Path], Path]
          ) -> Callable[[Path], tuple[list[str], list[str]]]:
    def case(tmp: Path) -> tuple[list[str], list[str]]:
        target = out(tmp)
        return [*argv(tmp), option, str(target)], [option, str(target)]
    return case


def _xnli(tmp: Path) -> list[str]:
    return ["eval", "xnli", "--data", str(tmp), "--predictions", str(tmp / "p.jsonl")]


def _lambada(tmp: Path) -> list[str]:
    return ["eval", "lambada", "--model", str(tmp / "model"), "--path", str(tmp / "c.jsonl")]


def _glue(tmp: Path) -> list[str]:
    return glue(tmp, tmp / "p.jsonl")


RUNGS = ", ".join(str(10 * (i + 1)) for i in range(99_000))
# (the case, given tmp_path: argv and what the one error line must name)
REFUSED: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    # suite values
    "wsd decay 1e-17": _validate(_sub("decay: 0.2", "decay: 1.0e-17")),
    "wsd decay 0": _validate(_sub("decay: 0.2", "decay: 0")),
    "a ladder of 99,000 rungs": _validate(_sub("[10, 20, 40]", f"[{RUNGS}]")),
    "a ladder of 65 rungs": _validate(_sub("[10, 20, 40]", "[" + ", ".join(
        str(i + 1) for i in range(65)) + "]")),
    "a ladder with a budget twice": _validate(_sub("[10, 20, 40]", "[10, 20, 20, 40]")),
    "a ladder with a NaN budget": _validate(_sub("steps: [10, 20, 40]", "flops: [1.0, .nan]")),
    "compute_metrics with no direction": _validate(_sub(
        "compute_metrics: [val.mse, train.train.final_loss]",
        "compute_metrics: [val.mse, train.steps]")),
    "compute_metrics misspelt": _validate(_sub(
        "compute_metrics: [val.mse, train.train.final_loss]", "compute_metrics: [val.mes]")),
    "report.metrics twice the same": _validate(_sub(
        "metrics: [val.mse, train.train.final_loss]", "metrics: [val.mse, val.mse]")),
    "report.metrics with a control character": _validate(_sub(
        "metrics: [val.mse, train.train.final_loss]", 'metrics: ["val.\\e[31m"]')),
    "report.metrics of 10,000 characters": _validate(_sub(
        "metrics: [val.mse, train.train.final_loss]", f"metrics: [val.{'m' * 10_000}]")),
    # output paths
    "report --out a file": _report_to(lambda t: _file(t / "reports")),
    "report --out a FIFO": _report_to(lambda t: _fifo(t / "reports")),
    "report --out below a file": _report_to(lambda t: _file(t / "reports") / "sub"),
    "report --out where nothing may be written": _report_to(lambda t: Path("/sys/hx-reports")),
    "glue --json a folder": _eval(_glue, "--json", lambda t: _folder(t / "out")),
    "glue --json below a file": _eval(_glue, "--json", lambda t: _file(t / "f") / "m.json"),
    "xnli --json a folder": _eval(_xnli, "--json", lambda t: _folder(t / "out")),
    "lambada --json a folder": _eval(_lambada, "--json", lambda t: _folder(t / "out")),
    "wider --json a folder": _eval(wider, "--json", lambda t: _folder(t / "out")),
    "wider --plot of an unknown format": _eval(wider, "--plot", lambda t: t / "curves.txt"),
    "pascal --plot a folder": _eval(pascal, "--plot", lambda t: _folder(t / "out")),
    "fddb --json a FIFO": _eval(fddb, "--json", lambda t: _fifo(t / "m.json")),
}
# what the message must say besides the file or path, where the case has a point to make
SAYS = {
    "wsd decay 1e-17": ["suite.yaml:5", "optim.decay", "give at least 1e-06"],
    "wsd decay 0": ["suite.yaml:5", "optim.decay", "greater than 0"],
    "a ladder of 99,000 rungs": ["suite.yaml:4", "budget", "at most 64 amounts", "got 99000"],
    "a ladder of 65 rungs": ["suite.yaml:4", "at most 64 amounts", "got 65"],
    "a ladder with a budget twice": ["suite.yaml:4", "in increasing order"],
    "a ladder with a NaN budget": ["suite.yaml:4", "budget.flops[1]", "finite number"],
    "compute_metrics with no direction": [
        "suite.yaml:10", "report.compute_metrics[1]", "'train.steps' has no direction"],
    "compute_metrics misspelt": ["suite.yaml:10", "report.compute_metrics[0]", "'val.mes'"],
    "report.metrics twice the same": ["suite.yaml:9", "report.metrics: metrics must be distinct"],
    "report.metrics with a control character": ["suite.yaml:9", "printable text"],
    "report.metrics of 10,000 characters": ["suite.yaml:9", "1 to 200 characters"],
    "report --out a file": ["is a file; expected a folder"],
    "report --out a FIFO": ["is a FIFO; expected a folder"],
    "report --out below a file": ["Not a directory"],
    "report --out where nothing may be written": ["cannot write in /sys"],
    "glue --json a folder": ["is a directory; expected a file"],
    "xnli --json a folder": ["is a directory; expected a file"],
    "lambada --json a folder": ["is a directory; expected a file"],
    "wider --plot of an unknown format": ["expected a .svg, .png or .pdf file"],
    "fddb --json a FIFO": ["is a FIFO; expected a file"],
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_hostile_settings_and_outputs_get_a_clean_error(
        case: str, root: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    before = sorted(p.name for p in root.iterdir())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv, named = REFUSED[case](root)
        listed = sorted(p.name for p in root.iterdir())
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for piece in [*named, *SAYS.get(case, [])]:
        assert piece in err, piece
    assert "Traceback" not in out + err and len(err) < 700
    assert [str(w.message) for w in caught] == []
    # refused before any work: nothing new beside what the case itself made
    assert sorted(p.name for p in root.iterdir()) == listed and set(before) <= set(listed)


def test_a_report_with_a_reason_of_100000_characters_prints_it_cut_short(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    _store(tmp_path / "results", failures=(("wide-long", LONG_REASON),))
    index = tmp_path / "results" / "index.sqlite"
    data = load_suite_data(index, "hx")
    cell = sections.format_unfinished_table(statistics.unfinished_table(data, ["narrow", "wide"])
                                       ).rows[0][4].text
    folder = data.runs.set_index("run_id").loc["wide-long", "path"]
    assert cell.startswith("RuntimeError: " + "y" * 30 + ZWSP + "y" * 30 + ZWSP)
    assert cell.endswith(f"… (cut at 600 of 100,014 characters; full reason in "
                         f"{folder}/state.json)")
    assert len(cell.replace(ZWSP, "")) < 600 + len(folder) + 80
    assert main(["report", str(suite), "--results", str(tmp_path / "results"), "--out",
                 str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == ""
    html = (tmp_path / "out" / "hx.html").read_text(encoding="utf-8")
    assert cell in html and "y" * 31 not in html
    printed = _laid_out_texts(html, "unfinished")  # what the PDF's pages hold
    assert cell in printed
    assert (tmp_path / "out" / "hx.pdf").read_bytes().startswith(b"%PDF")
    state = json.loads((Path(folder) / "state.json").read_text())
    assert state["reason"] == LONG_REASON  # the whole of it stays in the run's folder


def test_the_compute_to_match_of_a_loss_goes_downwards(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """At its smallest rung (10 steps) wide's final loss beats narrow's at 40 steps: a bound,
    ≤ 10 steps and ≥ ×4, where reading the loss as larger-is-better found it never reached;
    and the power law fitted saturates from above."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    _store(tmp_path / "results")
    html = _report_html(suite, tmp_path / "results", monkeypatch)
    section = html[html.index("Compute to match: train.train.final_loss"):]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(
        r"<tr>(.*?)</tr>", section[:section.index("</table>")].split("<tbody>")[1], re.S)]
    assert (rows[1][0], rows[1][1], rows[1][3], rows[1][5]) == (
        "wide", "≤ 1.000e+01", "≥ ×4.00", "0.0%")


def test_no_spread_gives_the_exact_difference_and_no_p() -> None:
    same = statistics.paired_difference([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert same.value == pytest.approx(0.1) and math.isnan(same.p)
    assert statistics.no_spread(same.low, same.high)
    spread = statistics.paired_difference([0.5, 0.61, 0.7], [0.4, 0.5, 0.6])
    assert not statistics.no_spread(spread.low, spread.high) and 0 < spread.p < 1
    assert not statistics.no_spread(math.inf, math.inf)  # an infinite difference is no point
    # the mean of three 0.2s is 0.20000000000000004: no spread all the same
    welch = statistics.welch_difference([0.5, 0.5], [0.2, 0.2, 0.2])
    assert (welch.value, welch.low, welch.high) == (0.3, 0.3, 0.3) and math.isnan(welch.p)
    rounded = statistics.paired_difference([0.3, 0.3, 0.3], [0.2, 0.2, 0.2])
    assert statistics.no_spread(rounded.low, rounded.high) and math.isnan(rounded.p)


def test_statistics_of_values_near_the_largest_float_do_not_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = statistics.seed_interval([1e308, 1e308, 1e308])
        assert (est.value, est.low, est.high) == (1e308, 1e308, 1e308)
        assert statistics.mean_of(np.array([1.5e308, 1.7e308])) == pytest.approx(1.6e308)
        assert statistics.paired_difference([1e308, 1e308], [-1e308, -1e308]).value == math.inf
        assert math.isnan(statistics.seed_interval([math.inf, -math.inf]).value)


def test_fits_of_huge_and_tiny_values_do_not_warn() -> None:
    c = np.repeat([1e15, 1e16, 1e17], 3)
    luck = np.tile([1.0, 1.01, 0.99], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        law = compute.fit_curve(c, 1e140 * (2 + (c / 1e15) ** -0.5) * luck, False)
        assert law is not None and law.form == compute.POWER_LAW
        assert law.params["a"] == pytest.approx(2e140, rel=0.05)
        assert compute.fit_curve(c, np.tile([1e-300, 0.0, 1e-300], 3), None) is not None


# ---- every metric a run records has a deliberate direction -----------------------------------

# (suite, metric as a run records it, True: larger is better, False: smaller, None: neither)
DIRECTIONS = [
    *[("demo/lm.yaml", m, d) for m, d in {
        "val.nll": False, "val.de.nll": False, "val.loss": False, "val.de.loss": False,
        "model.total_params": None, "model.pretrain.embedding_params": None,
        "model.head_params": None, "cwt.negatives": None, "lambada.acc": True,
        "lambada.ppl": False, "lambada.acc_stderr": None, "lambada.n": None,
        "train.pretrain.final_loss": False, "train.head_finetune.final_loss": False,
        "train.tokens": None, "train.pretrain.tokens": None, "train.tokens_per_s": True,
        "train.tokens_per_s.iqr": None, "train.tokens_per_s.n": None,
        "train.head_finetune.tokens_per_s": True, "train.pretrain.tokens_per_s.iqr": None,
    }.items()],
    *[("demo/encoder.yaml", m, d) for m, d in {
        "val.mlm_nll": False, "val.en.mlm_nll": False, "val.mlm_acc": True,
        "val.en.mlm_acc": True, "val.loss": False, "val.en.loss": False,
        "model.total_params": False, "model.embedding_params": None,
        "model.output_params": None, "model.non_embedding_params": None,
        "cwt.negatives": None, "glue.score": True, "glue.sst2.acc": True,
        "glue.sst2.epoch": None, "glue.sst2.finetune_steps": False,
        "glue.finetune_flops": False, "train.pretrain.final_loss": False,
    }.items()],
    *[("demo/faces.yaml", m, d) for m, d in {
        "model.total_params": None, "model.trainable_params": None,
        "model.backbone_params": None, "wider.single.easy": True,
        "wider.single.ms_per_image": False, "wider.single.ms_per_image.iqr": None,
        "fddb.single.tpr_disc@1000": True, "train.train.final_loss": False,
        "train.images": None, "train.images_per_s": True, "train.peak_memory_bytes": False,
        "train.mfu": True, "train.flops_per_s": True, "train.world_size": None,
    }.items()],
    *[("cwt/xnli.yaml", m, d) for m, d in {
        "xnli.zero_shot.avg": True, "xnli.zero_shot.de.acc": True,
        "xnli.translate_train.de.dev_acc": True, "xnli.zero_shot.epoch": None,
        "xnli.finetune_steps": False, "val.de.mlm_nll": False,
    }.items()],
    *[("ssh/fddb-pascal.yaml", m, d) for m, d in {
        "pascal.single.ap": True, "pascal.single.ap_11pt_plain": True,
        "pascal.single.ms_per_image.n": None, "fddb.pyramid.tpr_cont@1000": True,
    }.items()],
    *[("ssh/speed.yaml", m, d) for m, d in {
        "speed.single.600x1000_ms": False, "speed.single.600x1000_ms.iqr": None,
        "speed.pyramid.600x1000_ms.n": None,
    }.items()],
]


@pytest.mark.parametrize(("suite", "metric", "expected"), DIRECTIONS)
def test_each_metric_has_its_direction(suite: str, metric: str, expected: bool | None,
                                       suite_env: None) -> None:
    assert load_suite(SUITES / suite).higher_is_better(metric) is expected


def test_the_training_loop_records_no_metric_without_a_deliberate_direction(
        suite_env: None) -> None:
    """Every name `train.*` the runner records, for two stages on a GPU that has an MFU."""
    from bench.contract import StageResult

    curve = [{"wall": 0.1 * (k + 1), "tokens": 64 * (k + 1)} for k in range(20)]
    stages = [StageResult("pretrain", 20, 1e12, 1280, 2.0, 3.1, curve=curve, peak_memory=2e9),
              StageResult("head_finetune", 20, 1e11, 1280, 2.0, 2.9, curve=curve)]
    recorded = _training_metrics(stages, "tokens", "NVIDIA H100 80GB HBM3")
    lm = load_suite(SUITES / "demo/lm.yaml")
    expected = {m: d for s, m, d in DIRECTIONS if s == "demo/lm.yaml"}
    known = {"train.steps": None, "train.flops": None, "train.seconds": None,
             "train.flops_per_s": True, "train.mfu": True, "train.peak_memory_bytes": False,
             "train.world_size": None, **{f"train.{s}.{k}": None for s in ("pretrain",
             "head_finetune") for k in ("steps", "flops", "seconds")},
             "train.head_finetune.tokens": None, "train.head_finetune.tokens_per_s.iqr": None,
             "train.head_finetune.tokens_per_s.n": None, "train.pretrain.tokens_per_s": True,
             "train.pretrain.tokens_per_s.n": None, **expected}
    assert {"train.mfu", "train.peak_memory_bytes", "train.tokens_per_s.iqr"} <= set(recorded)
    assert {m: lm.higher_is_better(m) for m in recorded} == {m: known[m] for m in recorded}


def test_a_run_records_no_metric_without_a_deliberate_direction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real run (the toy family, scored by GLUE): each of its metrics is in this table."""
    suite = _toy_suite(tmp_path)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress", "--only",
                 "narrow", "--seeds", "0"]) == 0
    [metrics_file] = results.rglob("metrics.json")
    recorded = json.loads(metrics_file.read_text())
    expected = {"val.mse": False, "glue.score": True, "glue.score_best": True,
                "glue.score_last": True, "glue.sst2.acc": True, "glue.sst2.score": True,
                "glue.sst2.score_best": True, "glue.sst2.score_last": True,
                "glue.sst2.epoch": None, "train.train.final_loss": False,
                "train.rows_per_s": True, "train.train.rows_per_s": True,
                "train.world_size": None, "train.flops_per_s": True}
    directions = load_suite(suite).higher_is_better
    for metric in recorded:
        last = metric.rsplit(".", 1)[-1]
        if metric in expected:
            assert directions(metric) is expected[metric], metric
        elif last.startswith("finetune_"):  # the fine-tuning's costs
            assert directions(metric) is False, metric
        else:  # what the budget bought, a rate's spread and count
            assert last in {"steps", "flops", "rows", "seconds", "iqr", "n"}, metric
            assert directions(metric) is None, metric
    assert {"val.mse", "glue.score", "train.train.final_loss"} <= set(recorded)


def test_a_metric_no_rule_names_has_no_direction(suite_env: None) -> None:
    lm = load_suite(SUITES / "demo/lm.yaml")
    assert [lm.higher_is_better(m) for m in ("val.nl", "train.bogus", "model", "x")] == [
        None] * 4


def test_unknown_metrics_are_left_uncoloured(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(_sub("metrics: [val.mse, train.train.final_loss]",
                          "metrics: [val.mse, val.r2]"))
    _store(tmp_path / "results", lambda v, s, b, m: m.update({"val.r2": 0.5 + 0.1 * s + (
        0.3 if v == "wide" else 0) + 0.01 * (v == "wide") * s}))
    html = _report_html(suite, tmp_path / "results", monkeypatch)
    cells = re.findall(r'<td class="([^"]*)">\+0\.3', html)
    assert cells and all("better" not in c and "worse" not in c for c in cells)
