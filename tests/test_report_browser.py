"""The HTML report as headless Chromium shows and prints it: no errors, nothing fetched, every
figure drawn with an area, every table there under its heading, and a PDF of several pages."""

import re
import sqlite3
from pathlib import Path

import pytest
import support.browser as browser
from support.browser import ShownPage, ShownTable, outline, problems, show
from test_compute_report import _ladder_store
from test_compute_report import _spec as _ladder_spec
from test_report import SUITE, VARIANTS, _pdf_pages, build_index, make_spec

from bench.report import render_report

# Training efficiency as a GPU run records it, added to every finished run of test_report's index.
EFFICIENCY = {"train.flops_per_s": 3.0e14, "train.mfu": 0.3, "train.peak_memory_bytes": 2.0**33}


def _add_efficiency(index: Path) -> None:
    with sqlite3.connect(index) as con:
        finished = con.execute("SELECT run_id, variant, seed FROM runs WHERE suite = ? AND "
                               "state = 'finished'", (SUITE,)).fetchall()
        con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,NULL,NULL,NULL)",
                        [(run_id, SUITE, variant, seed, metric, value)
                         for run_id, variant, seed in finished
                         for metric, value in EFFICIENCY.items()])
    con.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML of a full report: comparison, main, efficiency, per-seed, unfinished and
    provenance tables, curve and metric figures, three variants with two or three seeds."""
    index = tmp_path_factory.mktemp("results") / "index.sqlite"
    build_index(index)
    _add_efficiency(index)
    html_path, _ = render_report(index, make_spec(), tmp_path_factory.mktemp("reports"))
    return html_path


@pytest.fixture(scope="module")
def shown(chromium: Path, report: Path) -> ShownPage:
    return show(chromium, report)


def _tables(page: ShownPage, cls: str) -> list[ShownTable]:
    found = [t for t in page.tables if t.cls == cls]
    assert found, f"no table of class {cls!r} shown"
    return found


def test_report_shows_without_errors_or_fetches(shown: ShownPage, report: Path) -> None:
    assert problems(shown, report.read_text(encoding="utf-8")) == []


def test_every_figure_is_drawn_with_an_area(shown: ShownPage, report: Path) -> None:
    assert outline(report.read_text(encoding="utf-8"))[1] == len(shown.figures) == 2
    assert all(w > 100 and h > 100 for w, h in shown.figures), shown.figures


def test_every_table_is_shown_under_its_heading(shown: ShownPage, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert len(shown.tables) == outline(html)[0] == len(re.findall(r"<table\b", html))
    comparison = _tables(shown, "comparison")
    assert {t.heading for t in comparison} == {"GLUE dev scores (paper Table 1)"}
    assert comparison[0].headers[:3] == ["variant", "MRPC", "glue.cola.score"]
    main = _tables(shown, "main")
    assert {t.heading for t in main} == {"Results by variant"}
    assert all("variant" in t.headers for t in main)
    assert all(t.rows == len(VARIANTS) for t in main)
    main_headers = [h for t in main for h in t.headers]
    assert {"lambada.acc", "lambada.ppl", "compute consumed (mean over seeds)", "FLOPs",
            "tokens/s"} <= set(main_headers)
    [efficiency] = _tables(shown, "efficiency")
    assert efficiency.heading == "Training efficiency"
    assert efficiency.headers == ["variant", "FLOP/s", "MFU", "tokens/s", "peak memory"]
    assert efficiency.rows == len(VARIANTS)
    per_seed = _tables(shown, "per-seed")
    assert {t.heading for t in per_seed} == {"Every seed"}
    assert per_seed[0].headers[:3] == ["variant", "seed", "run"]
    assert per_seed[0].rows == 8  # finished runs: 3 + 3 + 2
    assert {t.heading for t in _tables(shown, "unfinished")} == {"Failed or unfinished runs"}
    provenance = _tables(shown, "provenance")
    assert {t.heading for t in provenance} == {"Provenance"}
    assert "host" in provenance[0].headers


def test_report_prints_to_a_pdf_of_several_pages(shown: ShownPage) -> None:
    assert shown.pdf.startswith(b"%PDF")
    assert _pdf_pages(shown.pdf) >= 2, len(shown.pdf)


@pytest.fixture
def broken(report: Path, tmp_path: Path) -> Path:
    """The report with a script that throws, a figure and a table of no size, and an image to
    fetch."""
    html = report.read_text(encoding="utf-8").replace(
        "</body>", '<script>throw new Error("report script broke")</script>\n'
        '<figure><svg width="0" height="0"></svg></figure>\n<img src="missing.png" alt="">\n'
        '<table class="hidden" style="display: none"><tr><td>x</td></tr></table>\n</body>')
    path = tmp_path / report.name
    path.write_text(html, encoding="utf-8")
    return path


def test_a_broken_report_is_caught(chromium: Path, broken: Path) -> None:
    found = problems(show(chromium, broken), broken.read_text(encoding="utf-8"))
    assert any("uncaught exception" in p and "report script broke" in p for p in found), found
    assert any(p.startswith("figure 3 rendered 0x0") for p in found), found
    assert any("missing.png" in p and "fetched" in p for p in found), found
    assert any(p.startswith("request failed") and "missing.png" in p for p in found), found
    assert any("(hidden, under 'Provenance') rendered 0x0" in p for p in found), found


def test_without_chromium_the_tests_skip_saying_why(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "DEBIAN_CHROMIUM", tmp_path / "chromium")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Chromium not found at .*/chromium nor as "
                       r"chromium, chromium-browser, google-chrome on PATH: install it \(Debian: "
                       r"apt-get install chromium\), or run the tests as root with CI set"), \
            browser.chromium_executable():
        pass


def test_a_ladder_report_lays_out_its_compute_section(chromium: Path, tmp_path: Path) -> None:
    """The compute section (figures with residual panels, fits, compute to match, ratios)
    as the reader sees it."""
    html_path, _ = render_report(_ladder_store(tmp_path / "results"), _ladder_spec(),
                                 tmp_path / "reports")
    page = show(chromium, html_path)
    assert problems(page, html_path.read_text(encoding="utf-8")) == []
    assert len(page.figures) >= 2 and all(w > 100 and h > 100 for w, h in page.figures)
    assert {"fits", "match", "ratios"} <= {t.cls for t in page.tables}


@pytest.mark.parametrize("width", [420, 768])
def test_at_a_narrow_width_tables_scroll_instead_of_being_cut_off(chromium: Path, report: Path,
                                                                    width: int) -> None:
    page = show(chromium, report, width=width)
    assert problems(page, report.read_text(encoding="utf-8")) == []
    assert page.page_width <= width, "the page itself is wider than the window: cut off"
    main = _tables(page, "main")
    assert any(t.size[0] > width for t in main) == (width < 600)  # too wide for a phone ...
    for t in page.tables:
        left, right = t.box
        assert left >= 0 and right <= width, (t.cls, t.box)  # ... yet its box fits it
        assert t.scroll >= t.size[0] - 1, (t.cls, t.scroll, t.size)  # and scrolls to its end
