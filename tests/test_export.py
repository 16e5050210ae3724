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
from test_report import SUITE, VARIANTS, _Collect, build_index, make_spec

from bench import cli
from bench.report import render_report, statistics
from bench.report.formatting import fmt_interval
from bench.report.layout import Cell, Table
from bench.report.suite_data import load_suite_data
from bench.report.table_files import FORMATS, latex, latex_escape, markdown, table_text, tidy
from bench.report.tables import TABLE_NAMES, ReportTable, report_tables

HOSTILE = "cwt_ft & 50% $x$ #1 ~^{}\\ <é> ✓"
DOCUMENT = r"""\documentclass{{article}}
\usepackage{{booktabs}}
\usepackage[a4paper,landscape,margin=1cm]{{geometry}}
\begin{{document}}
{tables}
\end{{document}}
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results") / "index.sqlite"
    build_index(path)
    return path


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
    assert list(tables) == ["main", "paper", "per-seed", "compute"]


@pytest.mark.parametrize("name", ["main", "paper", "per-seed", "compute"])
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
    assert r"\textbf{0.2230 $\pm$ 0.0381}" in table_text(tables["main"], "latex", SUITE)
    assert "**0.2230 ± 0.0381**" in table_text(tables["main"], "markdown", SUITE)
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
                                   for name in ("main", "paper", "per-seed", "compute")
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
        f"{name}.{suffix}" for name in ("main", "per-seed", "compute")
        for suffix in ("csv", "tex"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _demo_store(root: Path) -> None:
    write_suite(root, "{steps: 40}")
    code, _, err = finish(bench(root, "run", "suite.yaml", "--seeds", "0", "1", "--results",
                                "results", "--no-progress"))
    assert code == 0, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    _demo_store(root)
    return root


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
