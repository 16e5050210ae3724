"""A report's tables as files (`bench export`, and the files the HTML report links): the CSV and
JSON read back to the statistics' numbers, the Markdown and LaTeX print the report's cells, the
LaTeX compiles with a real LaTeX (Debian's), and the command line names what it cannot do."""

import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from support.debian_packages import provided
from support.store_suite import write_suite
from test_cluster import bench, finish
from test_report import SUITE, VARIANTS, _Collect, index, make_spec

from bench import cli
from bench.errors import UserError
from bench.report import render_report, statistics
from bench.report.formatting import fmt_interval
from bench.report.layout import Cell, Table
from bench.report.suite_data import load_suite_data
from bench.report.table_files import FORMATS, latex, latex_escape, markdown, table_text, tidy
from bench.report.tables import TABLE_NAMES, ReportTable, report_tables
from bench.results import open_results
from bench.store.runs import Store

__all__ = ["index"]  # test_report's hand-built index, a fixture of this module too

HOSTILE = "cwt_ft & 50% $x$ #1 ~^{}\\ <é> ✓"
DOCUMENT = r"""\documentclass{{article}}
\usepackage{{booktabs}}
\usepackage[a4paper,landscape,margin=1cm]{{geometry}}
\begin{{document}}
{tables}
\end{{document}}
"""


@pytest.fixture(scope="module")
def tables(index: Path) -> dict[str, ReportTable]:
    return report_tables(make_spec(), load_suite_data(index, SUITE))


def _read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])


def test_the_command_line_names_every_table_and_format() -> None:
    assert cli.TABLE_NAMES == TABLE_NAMES
    assert tuple(FORMATS) == cli.TABLE_FORMATS


def test_a_full_report_has_every_table(tables: dict[str, ReportTable]) -> None:
    # the hand-built index records no efficiency figures: that table is left out
    assert list(tables) == ["main", "brief", "paper", "per-seed", "compute"]


@pytest.mark.parametrize("name", ["main", "brief", "paper", "per-seed", "compute"])
def test_csv_and_json_read_back_to_the_statistics_numbers(tables: dict[str, ReportTable],
                                                          name: str) -> None:
    table = tables[name]
    expected = tidy(table.numbers)
    back = _read_csv(table_text(table, "csv", SUITE))
    assert list(back.columns) == list(expected.columns)
    for column in expected.columns:
        want, got = expected[column].tolist(), back[column].tolist()
        assert [None if pd.isna(x) else x for x in got] == \
            [None if pd.isna(x) else x for x in want], column  # exact: round-trip floats
    doc = json.loads(table_text(table, "json", SUITE))
    assert (doc["suite"], doc["table"], doc["caption"]) == (SUITE, name, table.caption)
    assert doc["rows"] == [{k: None if pd.isna(v) else v for k, v in row.items()}
                           for row in expected.to_dict("records")]


def test_the_main_csv_is_the_summary_the_report_prints(tables: dict[str, ReportTable],
                                                       index: Path, tmp_path: Path) -> None:
    back = _read_csv(table_text(tables["main"], "csv", SUITE))
    html_path, _ = render_report(index, make_spec(), tmp_path)
    parser = _Collect()
    parser.feed(html_path.read_text(encoding="utf-8"))
    printed: dict[str, list[str]] = {}  # each variant's cells over the split table's parts
    for row in parser.rows:
        printed.setdefault(row[0], []).extend(row[1:])
    for row in back.itertuples():
        assert fmt_interval(row.mean, row.low, row.high, row.n) in printed[row.variant]
    softmax = back[(back["variant"] == "softmax") & (back["metric"] == "lambada.acc")]
    assert softmax["mean"].item() == pytest.approx(0.20)
    assert softmax["n"].item() == 3


def test_paper_csv_has_a_row_per_variant_and_metric(tables: dict[str, ReportTable]) -> None:
    back = _read_csv(table_text(tables["paper"], "csv", SUITE))
    cwt = back.set_index(["variant", "metric"]).loc["cwt"]
    assert cwt.loc["glue.score", "mean"] == pytest.approx(0.83)
    assert cwt.loc["glue.score", "n"] == 3
    assert cwt.loc["train.tokens_per_s", "reference_ratio"] == 2.13
    assert math.isnan(cwt.loc["glue.score", "ratio"])  # a column, not a ratio


def test_the_best_mean_of_each_column_is_bold(tables: dict[str, ReportTable],
                                              index: Path) -> None:
    main = tables["main"].shown
    acc, ppl = 2, 6  # lambada.acc's and lambada.ppl's mean columns
    assert main.columns[acc] == main.columns[ppl] == "mean ± 95% CI (seeds)"
    best = {(row[0].text, j) for row in main.rows for j in (acc, ppl)
            if "best" in row[j].cls.split()}
    assert best == {("cwt_ft", acc), ("cwt_ft", ppl)}  # accuracy up, perplexity down
    assert r"\textbf{0.2230 $\pm$ 0.0381 (n=2)}" in table_text(tables["main"], "latex", SUITE)
    assert "**0.2230 ± 0.0381 (n=2)**" in table_text(tables["main"], "markdown", SUITE)
    # the paper table's columns by the suite's directions; a tie makes each bold
    spec = make_spec(higher_is_better={"glue.mrpc.score": True})
    paper = report_tables(spec, load_suite_data(index, SUITE))["paper"].shown
    assert [row[0].text for row in paper.rows if "best" in row[1].cls.split()] == \
        ["softmax", "cwt"]  # 0.86 each
    assert not any("best" in row[2].cls for row in paper.rows)  # cola: no direction given


def test_no_direction_no_bold(index: Path) -> None:
    spec = make_spec(higher_is_better={"lambada.acc": None, "lambada.ppl": None})
    main = report_tables(spec, load_suite_data(index, SUITE))["main"]
    assert not any("best" in cell.cls for row in main.shown.rows for cell in row)
    assert "Bold" not in main.caption


def test_captions_name_suite_seeds_test_and_proxy(index: Path) -> None:
    spec = make_spec(proxies=["lambada"])
    tables = report_tables(spec, load_suite_data(index, SUITE))
    caption = tables["main"].caption
    assert caption.startswith("CWT vs softmax (demo). Suite cwt-demo, seeds 0, 1, 2.")
    assert "95% Student-t interval" in caption
    assert "Welch t-test or paired t-test over seeds" in caption
    assert "(proxy): scored on a proxy data set" in caption
    assert tables["main"].shown.groups[1][0] == "lambada.acc (proxy)"
    assert "Godey et al. 2024, Table 3" in tables["paper"].caption


def test_markdown_is_one_pipe_table_with_the_reports_cells(
        tables: dict[str, ReportTable]) -> None:
    text = table_text(tables["main"], "markdown", SUITE)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) == 2 + len(VARIANTS)
    assert {row.count(" | ") for row in rows if not row.startswith("|:")} == \
        {len(tables["main"].shown.columns) - 1}
    assert rows[0].startswith("| variant | seeds | lambada.acc: mean ± 95% CI (seeds) |")
    assert "| cwt | 3 | 0.1790 ± 0.0163 |" in text
    assert lines[-1] == tables["main"].caption
    hostile = Table(columns=["variant", "v"], rows=[[Cell("a|b*c", "name"), Cell("1", "num")]])
    assert r"| a\|b\*c | 1 |" in markdown(hostile, "")


def test_latex_escapes_every_special_character() -> None:
    assert latex_escape(HOSTILE) == (
        r"cwt\_ft \& 50\% \$x\$ \#1 \textasciitilde{}\textasciicircum{}\{\}\textbackslash{} "
        r"\textless{}é\textgreater{} [U+2713]")
    assert latex_escape("±×−—Δ") == r"$\pm$$\times$$-$---$\Delta$"


def test_latex_is_a_booktabs_table_with_grouped_headers(tables: dict[str, ReportTable]) -> None:
    text = table_text(tables["main"], "latex", SUITE)
    assert r"\begin{tabular}{lrrrrrrrrrrr}" in text
    assert r"\multicolumn{4}{c}{lambada.acc} & \multicolumn{3}{c}{lambada.ppl}" in text
    assert r"\cmidrule(lr){3-6} \cmidrule(lr){7-9} \cmidrule(lr){10-12}" in text
    assert text.index(r"\toprule") < text.index(r"\midrule") < text.index(r"\bottomrule")
    assert r"\label{tab:cwt-demo-main}" in text
    assert r"cwt\_ft & 2 &" in text
    paper = table_text(tables["paper"], "latex", SUITE)
    assert r"\textit{cwt (paper)} & \textit{85.31}" in paper


def _pdflatex() -> str | None:
    found = shutil.which("pdflatex")
    if found is None:
        return None
    probe = subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True,
                           check=False)
    return found if probe.stdout.strip() else None


@pytest.fixture(scope="module")
def pdflatex() -> str:
    with provided(["texlive-latex-base", "texlive-latex-recommended"], _pdflatex,
                  "pdflatex with booktabs.sty (Debian's TeX Live) not found") as found:
        yield found


def compile_latex(pdflatex: str, body: str, folder: Path) -> str:
    """`body` in a minimal document, compiled; the log (the test fails on an error)."""
    (folder / "tables.tex").write_text(DOCUMENT.format(tables=body), encoding="utf-8")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error",
                           "tables.tex"], cwd=folder, capture_output=True, text=True,
                          check=False, timeout=120)
    log = (folder / "tables.log").read_text(encoding="latin-1")
    assert done.returncode == 0, log[-3000:]
    assert (folder / "tables.pdf").stat().st_size > 1000
    return log


def test_every_table_compiles_with_latex(pdflatex: str, index: Path, tmp_path: Path) -> None:
    spec = make_spec(variants=[*VARIANTS, HOSTILE], proxies=["lambada"])
    tables = report_tables(spec, load_suite_data(index, SUITE))
    body = "\n".join(table_text(t, "latex", SUITE) for t in tables.values())
    hostile = Table(columns=[HOSTILE, "v"], groups=[(HOSTILE, 2)],
                    rows=[[Cell(HOSTILE, "name best"), Cell("−1.0 ± 0.2 (Δ, p=0.01) …", "num")]])
    body += latex(hostile, HOSTILE, f"tab:{HOSTILE}")
    log = compile_latex(pdflatex, body, tmp_path)
    assert "Output written on tables.pdf" in log
    assert "Missing character" not in log


def test_the_report_links_its_tables_csv_and_latex(index: Path, tmp_path: Path) -> None:
    html_path, _ = render_report(index, make_spec(), tmp_path)
    html = html_path.read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)">', html)
    assert sorted(links) == sorted(f"{SUITE}-tables/{name}.{suffix}"
                                   for name in ("main", "brief", "paper", "per-seed", "compute")
                                   for suffix in ("csv", "tex"))
    assert all((tmp_path / link).is_file() for link in links)
    folder = tmp_path / f"{SUITE}-tables"
    main = _read_csv((folder / "main.csv").read_text(encoding="utf-8"))
    data = load_suite_data(index, SUITE)
    summary = statistics.summary_table(data, VARIANTS, ["lambada.acc", "lambada.ppl"],
                                       "softmax", make_spec().reference)
    assert main.set_index(["variant", "metric"])["mean"].to_dict() == \
        summary["mean"].to_dict()
    # a render without the paper table replaces the folder whole: no stale file is left
    render_report(index, make_spec(table=None), tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{name}.{suffix}" for name in ("main", "brief", "per-seed", "compute")
        for suffix in ("csv", "tex"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A results store with two variants' two seeds finished, and what `bench run` printed."""
    root = tmp_path_factory.mktemp("export")
    write_suite(root, "{steps: 40}")
    code, out, err = finish(bench(root, "run", "suite.yaml", "--seeds", "0", "1", "--results",
                                  "results", "--no-progress"))
    assert code == 0, err
    return root, out


@pytest.fixture(scope="module")
def store(finished_run: tuple[Path, str]) -> Path:
    return finished_run[0]


def _export_csv(store: Path, table: str = "main") -> pd.DataFrame:
    code, out, err = finish(bench(store, "export", "suite.yaml", "--results", "results",
                                  "--table", table, "--format", "csv"))
    assert code == 0, err
    return _read_csv(out)


@pytest.mark.slow
def test_bench_run_ends_with_the_key_metrics_table(finished_run: tuple[Path, str]) -> None:
    store, out = finished_run
    table = out[out.index("\n| variant | seeds |") + 1:].splitlines()
    metrics = ["lambada.acc", "lambada.ppl", "val.nll"]  # the family's defaults
    assert table[0] == "| variant | seeds | lambada.acc (proxy) | lambada.ppl (proxy) | val.nll |"
    main = _export_csv(store).set_index(["variant", "metric"])
    for line, variant in zip(table[2:4], ["softmax", "cwt"], strict=True):
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        assert cells[:2] == [variant, "2"]
        for cell, metric in zip(cells[2:], metrics, strict=True):
            row = main.loc[(variant, metric)]
            assert cell == fmt_interval(row["mean"], row["low"], row["high"], int(row["n"]))
    assert table[5].startswith("Suite store-e2e, budget 40 steps per run, seeds 0, 1. Mean ")


@pytest.mark.slow
def test_bench_ls_lists_budgets_chosen_metrics_and_means_by_variant(store: Path) -> None:
    def ls(*argv: str) -> tuple[int, str, str]:
        return finish(bench(store, "ls", "--results", "results", *argv))

    code, out, err = ls()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "suite", "variant", "seed", "state", "budget",
                                "metrics"]
    assert len(lines) == 5 and all("finished  40 steps" in line for line in lines[1:])
    shown = re.findall(r"(\S+)=", lines[1])
    assert shown == ["lambada.acc", "lambada.ppl", "val.loss", "val.nll"]  # no stderr, counts
    code, out, _ = ls("--metric", "lambada.a*,train.flops", "--format", "json")
    runs = json.loads(out)
    assert code == 0 and len(runs) == 4
    assert {k for k in runs[0] if "." in k} == {"lambada.acc", "lambada.acc_stderr",
                                               "train.flops"}
    assert {(r["unit"], r["budget"], r["state"]) for r in runs} == {("steps", 40.0, "finished")}
    code, out, _ = ls("--by", "variant", "--format", "csv")
    means = _read_csv(out).set_index("variant")
    main = _export_csv(store).set_index(["variant", "metric"])
    for variant in ("softmax", "cwt"):
        assert means.loc[variant, ["runs", "finished"]].tolist() == [2, 2]
        assert means.loc[variant, "lambada.acc"] == pytest.approx(
            main.loc[(variant, "lambada.acc"), "mean"], rel=1e-12)
    code, out, _ = ls("--by", "variant")
    assert out.splitlines()[0].split() == ["suite", "variant", "budget", "runs", "finished",
                                           "lambada.acc", "lambada.ppl", "val.loss", "val.nll"]
    code, out, _ = ls("--state", "failed,interrupted")
    assert code == 0 and out.startswith("no runs in ") and "in that state" in out
    code, _, err = ls("--state", "finised")
    assert code == 2 and "--state finised: not a state a run is shown in; did you mean " \
        "'finished'?" in err
    code, _, err = ls("--metric", "lambada.accuracy")
    assert code == 2 and "--metric lambada.accuracy: no listed run recorded it; did you " \
        "mean 'lambada.acc'?" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bench_export_writes_each_table_in_each_format(store: Path, fmt: str) -> None:
    for name in ("main", "per-seed", "compute", "efficiency"):  # CPU runs record FLOP/s
        out = f"{name}{FORMATS[fmt]}"
        code, _, err = finish(bench(store, "export", "suite.yaml", "--results", "results",
                                    "--table", name, "--out", out))
        assert code == 0, err
        assert f"wrote {out} ({name} table, {fmt})" in err
    code, printed, _ = finish(bench(store, "export", "suite.yaml", "--results", "results",
                                    "--format", fmt))  # the main table by default
    assert code == 0 and printed == (store / f"main{FORMATS[fmt]}").read_text(encoding="utf-8")
    if fmt == "csv":
        main = _read_csv((store / "main.csv").read_text(encoding="utf-8"))
        assert sorted(set(main["variant"])) == ["cwt", "softmax"]
        assert set(main["n"]) == {2}
        assert set(main["metric"]) >= {"lambada.acc", "lambada.ppl"}


@pytest.mark.slow
def test_bench_export_names_what_it_cannot_do(store: Path) -> None:
    def export(*argv: str) -> tuple[int, str]:
        code, _, err = finish(bench(store, "export", "suite.yaml", "--results", "results",
                                    *argv))
        assert "Traceback" not in err
        return code, err

    code, err = export("--table", "paper")
    assert code == 2 and "--table paper: suite 'store-e2e' has no such table: it has no " \
        "report.table block" in err
    code, err = export("--out", "table.xlsx")
    assert code == 2 and "--out table.xlsx: its suffix names no format" in err
    (store / "a-folder").mkdir()
    code, err = export("--out", "a-folder", "--format", "csv")
    assert code == 2 and "--out a-folder: is a directory" in err
    code, err = export("--results", "elsewhere")
    assert code == 2 and "results index not found (suite 'store-e2e')" in err


def readme_example() -> str:
    """The README's Python example (under "From Python"), as a notebook would run it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### From Python"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


@pytest.mark.slow
def test_the_readme_example_reads_the_store_into_frames(store: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    code = readme_example().replace("suites/demo/lm.yaml", "suite.yaml").replace(
        '"demo-lm"', '"store-e2e"')
    monkeypatch.chdir(store)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # the project's own example
    runs = scope["runs"]
    assert isinstance(runs, pd.DataFrame) and len(runs) == 4
    assert set(runs["state"]) == {"finished"} and set(runs["budget"]) == {40.0}
    acc = scope["acc"]
    assert isinstance(acc, pd.DataFrame)
    assert acc.shape == (2, 2) and sorted(acc.columns) == ["cwt", "softmax"]
    curves = scope["curves"]
    assert isinstance(curves, pd.DataFrame)
    assert list(curves.columns) == ["run_id", "variant", "seed", "metric", "step", "flops",
                                    "tokens", "value"]
    assert set(curves["metric"]) == {"train_loss"}
    assert curves.groupby("run_id").size().tolist() == [curves["step"].nunique()] * 4
    samples = scope["samples"]
    assert isinstance(samples, pd.DataFrame) and len(samples) == 4 * samples["doc_id"].nunique()
    solved = scope["solved"]
    assert isinstance(solved, pd.DataFrame)
    # an accuracy is the share of passages solved: the per-example rows give the metric back
    finals = scope["finals"]
    assert isinstance(finals, pd.DataFrame)
    by_run = samples.groupby("run_id")["is_greedy"].mean()
    recorded = finals[finals["metric"] == "lambada.acc"].set_index("run_id")["value"]
    assert by_run.sort_index().tolist() == pytest.approx(recorded.sort_index().tolist())
    summary = scope["summary"]
    assert isinstance(summary, pd.DataFrame)
    def nulls(frame: pd.DataFrame) -> list[dict[str, object]]:  # NaN, None, <NA> alike
        return [{k: None if pd.isna(v) else v for k, v in row.items()}
                for row in frame.to_dict("records")]

    assert nulls(summary) == nulls(_export_csv(store))
    per_seed = scope["per_seed"]
    assert isinstance(per_seed, pd.DataFrame) and len(per_seed) == 4


def test_an_evaluation_without_samples_is_named(index: Path) -> None:
    results = open_results(index.parent)
    with pytest.raises(UserError, match=r"suite 'cwt-demo': no finished run wrote "
                       r"samples_glue\.jsonl in .*; evaluations with samples: none"):
        results.samples(SUITE, "glue")
    assert results.suites() == ["cwt-demo", "other"]
    finals = results.metrics(SUITE)
    assert list(finals.columns) == ["run_id", "variant", "seed", "metric", "value"]
    assert "cwt_ft-s2-failed" not in set(finals["run_id"])  # finished runs only


@pytest.mark.parametrize(("lines", "problem"), [
    ('{"doc_id": 0}\n{"doc_id": 1,\n', "samples_lambada.jsonl:2: Expecting"),
    ('{"doc_id": 0}\n[1, 2]\n', "samples_lambada.jsonl:2: expected a JSON object"),
    ('{"doc_id": 0}\n' + "[" * 200 + "]" * 200 + "\n", "samples_lambada.jsonl:2: "),
])
def test_a_damaged_samples_file_is_named_with_its_line(tmp_path: Path, lines: str,
                                                       problem: str) -> None:
    store = Store(tmp_path)
    store.begin(SUITE, "softmax", 0, "run-0", {}, {"started": "2025-01-01"})
    store.finish("run-0", {"lambada.acc": 0.5}, [], {}, {})
    (tmp_path / SUITE / "run-0" / "samples_lambada.jsonl").write_text(lines)
    with pytest.raises(UserError, match=re.escape(problem)):
        open_results(tmp_path).samples(SUITE, "lambada")
    (tmp_path / SUITE / "run-0" / "samples_lambada.jsonl").write_text('{"doc_id": 0}\n\n')
    samples = open_results(tmp_path).samples(SUITE, "lambada")
    assert samples.to_dict("records") == [{"run_id": "run-0", "variant": "softmax", "seed": 0,
                                           "doc_id": 0}]


def _second_suite(store: Path, name: str, cloze: str | None = None) -> str:
    """A copy of the store's suite under another name (and cloze file), its softmax variant
    trained at seed 2."""
    text = (store / "suite.yaml").read_text().replace("suite: store-e2e", f"suite: {name}")
    if cloze is not None:
        text = text.replace(str(store / "data" / "cloze.jsonl"), cloze)
    path = f"{name}.yaml"
    (store / path).write_text(text)
    code, _, err = finish(bench(store, "run", path, "--only", "softmax", "--seeds", "2",
                                "--results", "results", "--no-progress"))
    assert code == 0, err
    return path


@pytest.mark.slow
def test_bench_compare_puts_two_suites_variants_side_by_side(store: Path) -> None:
    other = _second_suite(store, "store-later")
    code, out, err = finish(bench(store, "compare", "suite.yaml", other, "--results", "results",
                                  "--format", "csv", "--baseline", "store-later/softmax"))
    assert code == 0, err
    table = _read_csv(out).set_index(["variant", "metric"])
    # store-later's cwt never ran: left out
    assert sorted(set(table.index.get_level_values("variant"))) == [
        "store-e2e/cwt", "store-e2e/softmax", "store-later/softmax"]
    later = table.loc[("store-later/softmax", "lambada.acc")]
    assert later["n"] == 1 and pd.isna(later["delta"])  # the baseline
    earlier = table.loc[("store-e2e/softmax", "lambada.acc")]
    main = _export_csv(store).set_index(["variant", "metric"])
    assert earlier["mean"] == main.loc[("softmax", "lambada.acc"), "mean"]
    assert earlier["delta_test"] == "Welch"  # other seeds: nothing pairs them
    code, out, err = finish(bench(store, "compare", "suite.yaml", other, "--results", "results",
                                  "--out", "reports"))
    assert code == 0, err
    html = (store / "reports" / "store-e2e-vs-store-later.html").read_text(encoding="utf-8")
    assert "Compared suites: store-e2e, store-later." in html
    assert f"store-later trained on {store / 'data' / 'train.jsonl'}." in html
    assert (store / "reports" / "store-e2e-vs-store-later-tables" / "main.csv").is_file()


@pytest.mark.slow
def test_bench_compare_refuses_other_evaluation_data_unless_asked(store: Path) -> None:
    cloze = store / "data" / "cloze.jsonl"
    changed = store / "cloze-edited.jsonl"
    lines = cloze.read_text().splitlines(keepends=True)
    changed.write_text("".join(lines[1:]))  # one passage fewer
    other = _second_suite(store, "store-edited", str(changed))
    code, _, err = finish(bench(store, "compare", "suite.yaml", other, "--results", "results",
                                "--format", "markdown"))
    assert code == 2 and "Traceback" not in err
    assert (f"error: bench compare: evals.lambada.path differs: suite store-e2e evaluated "
            f"{cloze} (sha256 ") in err and f"suite store-edited {changed} (sha256 " in err
    assert "--allow-different-data compares them anyway" in err
    code, out, err = finish(bench(store, "compare", "suite.yaml", other, "--results", "results",
                                  "--format", "markdown", "--allow-different-data"))
    assert code == 0 and "| store-edited/softmax | 1 |" in out, err
