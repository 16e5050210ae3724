"""What the reader sees: names shown verbatim in figures and HTML, tables that fit the PDF page,
legends only for columns present, and an HTML and PDF that always come from one render."""

import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
import weasyprint
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial
from test_report import build_index, make_spec, pdf_chunks
from weasyprint.formatting_structure import boxes

from bench.report import ReportSpec, layout, render_report, sections
from bench.report import render as render_mod
from bench.report import study as study_mod
from bench.report.figures import to_svg
from bench.report.suite_data import load_suite_data
from bench.store.queries import study_runs
from bench.store.runs import Store

SUITE = "layout"
# Names a suite may use that mathtext, TeX or HTML would otherwise interpret.
HOSTILE = ["val.$x^2$", "bad $\\undefined{x}$", "eval\\path", "set{a,b}", "rate%",
           "<b>bold</b>"]
# Many metrics with long names, long variant names: the table is far wider than any page.
LONG = [f"wider.pyramid_with_context_module.{k}.average_precision_{i}"
        for i, k in enumerate(["easy", "medium", "hard", "all", "tiny", "large", "huge"])]
VARIANTS = ["headless_vgg16_with_context_and_ohem", "full_vgg16_with_context_and_ohem"]


def _store(root: Path, metrics: list[str], stderr: bool) -> Path:
    """Two variants x two seeds with every metric (and lm-eval stderr when asked) and a curve
    under a hostile name."""
    store = Store(root)
    for v, variant in enumerate(VARIANTS):
        for seed in range(2):
            run_id = f"{variant}-{seed}"
            store.begin(SUITE, variant, seed, run_id, {}, {"started": f"2025-01-0{seed + 1}"})
            values = {m: 0.5 + 0.01 * i + 0.02 * v + 0.003 * seed for i, m in enumerate(metrics)}
            if stderr:
                values |= {f"{m}_stderr": 0.004 for m in metrics}
            values |= {"train.flops": 1e15, "train.tokens": 2e8, "train.tokens_per_s": 1.2e4}
            curve = [{"step": s, "flops": s * 1e14, "tokens": s * 1e7,
                      "val_$x^2$ {nll}": 5.0 - 0.1 * s}
                     for s in range(1, 6)]
            store.finish(run_id, values, curve, {"ended": "2025-01-09"},
                         {"pr:$x^2$ <b>%": ([0.0, 0.5, 1.0], [1.0, 0.8, 0.4])})
    return store.index_path


def _spec(metrics: list[str], **changes: object) -> ReportSpec:
    fields = dict(suite=SUITE, title="Layout", baseline=VARIANTS[0], metrics=metrics,
                  higher_is_better={m: True for m in metrics},
                  reference={VARIANTS[0]: {metrics[0]: 0.55}}, reference_source="a paper",
                  notes=[], curve="curve.val_$x^2$ {nll}", variants=VARIANTS)
    return ReportSpec(**{**fields, **changes})


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("hostile"), HOSTILE, stderr=False)


@pytest.fixture(scope="module")
def wide_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("wide"), LONG, stderr=True)


@pytest.fixture(scope="module")
def hostile_html(hostile_index: Path) -> str:
    return render_mod.render_html(hostile_index, _spec(HOSTILE),
                                  load_suite_data(hostile_index, SUITE))


@pytest.fixture(scope="module")
def wide_html(wide_index: Path) -> str:
    return render_mod.render_html(wide_index, _spec(LONG), load_suite_data(wide_index, SUITE))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_figure_text_is_shown_verbatim() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="$x^2$ <b>")
    ax.set_title("$x^2$ \\ {} %")
    ax.set_xlabel("a$b")  # one dollar: mathtext leaves it alone, escaping must not show `\`
    ax.set_xticks([0, 1], ["$\\alpha$", "\\$ pre-escaped"])
    ax.legend()
    svg = to_svg(fig, salt="t")
    for text in ("$x^2$ &lt;b&gt;", "$x^2$ \\ {} %", "a$b", "$\\alpha$", "\\$ pre-escaped"):
        assert text in svg
    assert "<b>" not in svg


def test_hostile_names_render_literally_in_every_figure_and_the_html(hostile_html: str) -> None:
    html = hostile_html
    assert html.count("<svg") == 3  # curve, metrics, evaluation curves: none failed
    parser = _Tags()
    parser.feed(html)
    assert "b" not in parser.tags  # `<b>` is text everywhere, never markup
    text = "".join(parser.text)
    for name in (*HOSTILE, "curve.val_$x^2$ {nll}", "$x^2$ <b>%"):
        assert name in text


def _table_overflow(pdf: weasyprint.Document) -> Iterator[tuple[int, float, float]]:
    """(page number, right edge of a table, right edge of the page's content) per table."""
    for number, page in enumerate(pdf.pages, 1):
        root = page._page_box  # WeasyPrint's laid-out boxes: no public accessor
        right = root.content_box_x() + root.width
        stack = [root]
        while stack:
            box = stack.pop()
            if isinstance(box, boxes.TableBox):
                yield number, box.border_box_x() + box.border_width(), right
            stack.extend(getattr(box, "children", []))


def test_wide_table_fits_the_pdf_page(wide_html: str) -> None:
    assert wide_html.count('<table class="main">') > 1  # split, each part naming its variants
    edges = list(_table_overflow(weasyprint.HTML(string=wide_html).render()))
    assert edges
    assert all(edge <= right + 0.5 for _, edge, right in edges), edges


def test_split_parts_repeat_the_row_names_and_keep_header_groups() -> None:
    cell = layout.Cell("0.1234 ± 0.0123", "num")
    groups = [("", 2), *[(f"m{i}", 2) for i in range(6)]]
    table = layout.Table(columns=["variant", "seeds", *["mean", "Δ"] * 6],
                             rows=[[layout.Cell("a", "name"), layout.Cell("2", "num"),
                                    *[cell] * 12]], groups=groups, keep=2)
    parts = layout.fit_width(table, 350.0)
    assert len(parts) > 1
    assert [g for p in parts for g in p.groups[1:]] == groups[1:]  # every group once, in order
    for part in parts:
        assert part.columns[:2] == ["variant", "seeds"] and part.groups[0] == ("", 2)
        assert sum(layout.column_widths(part)) <= 350.0
        assert len(part.rows[0]) == len(part.columns) == sum(s for _, s in part.groups)
    assert layout.fit_width(table, 10_000.0) == [table]


def test_stderr_legend_only_under_a_stderr_column(wide_html: str, hostile_html: str) -> None:
    legend = "evaluation-sampling noise"
    assert sections.STDERR_COLUMN in wide_html and legend in wide_html
    assert sections.STDERR_COLUMN not in hostile_html and legend not in hostile_html


def _pdf_keywords(blob: bytes) -> list[bytes]:
    """The /Keywords strings of a PDF."""
    return [k for chunk in pdf_chunks(blob) for k in re.findall(rb"/Keywords \((.*?)\)", chunk)]


def _html_render_id(html: str) -> str:
    found = re.findall(r'<meta name="keywords" content="render ([0-9a-f]{16})">', html)
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def pair(hostile_index: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One full render (the PDF is the slow part), shared by the tests below."""
    return render_report(hostile_index, _spec(HOSTILE), tmp_path_factory.mktemp("pair"))


def test_html_and_pdf_carry_one_render_id(hostile_html: str, pair: tuple[Path, Path]) -> None:
    html_path, pdf_path = pair
    html = html_path.read_text(encoding="utf-8")
    rid = _html_render_id(html)
    assert _pdf_keywords(pdf_path.read_bytes()) == [f"render {rid}".encode()]
    assert render_mod.stamp(hostile_html) == html  # the same report gets the same id
    other = hostile_html.replace("<title>Layout</title>", "<title>Other</title>")
    assert _html_render_id(render_mod.stamp(other)) != rid


def test_failed_pdf_leaves_the_previous_pair(hostile_index: Path, pair: tuple[Path, Path],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for path in pair:
        shutil.copy(path, tmp_path / path.name)
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(weasyprint.HTML, "write_pdf", fail)
    with pytest.raises(OSError, match="disk full"):
        render_report(hostile_index, _spec(HOSTILE, title="Changed"), tmp_path)
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before


def test_sweep_figures_show_parameter_and_metric_names_verbatim() -> None:
    space = {"a.$x^2$": FloatDistribution(1e-4, 1.0, log=True),
             "b\\{%}": CategoricalDistribution(["$p$", "<b>q"])}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for a, b, value in [(0.01, "$p$", 3.0), (0.1, "<b>q", 2.0), (0.5, "$p$", 1.0),
                        (0.001, "<b>q", 2.5)]:
        study.add_trial(create_trial(params={"a.$x^2$": a, "b\\{%}": b}, distributions=space,
                                     value=value))
    source = study_mod.SweepSource(study="s", storage="s.journal", metric="val.$nll$",
                                   direction="minimize", params=list(space), trials=4,
                                   reported="val_nll", command="bench sweep s.yaml")
    data = study_mod.SweepData(source, study, study.trials, study_runs(Path("-"), "s"))
    shown = {name: re.findall(r"<text[^>]*>([^<]*)</text>", figure(data))
             for name, figure in [("history", study_mod.history_figure),
                                  ("importance", study_mod.importance_figure),
                                  ("parallel", study_mod.parallel_figure)]}
    assert "val.$nll$" in shown["history"]
    assert {"a.$x^2$", "b\\{%}"} <= set(shown["importance"])
    assert {"val.$nll$", "a.$x^2$", "b\\{%}", "$p$", "&lt;b&gt;q"} <= set(shown["parallel"])


def test_short_row_names_are_not_broken_in_a_full_table(tmp_path: Path) -> None:
    """A table squeezed to the page (the faces demo's metrics) keeps a short row name
    ('headless') on one line."""
    metrics = ["wider.single.easy", "wider.single.medium", "wider.single.hard",
               "wider.pyramid.hard", "fddb.single.tpr_disc@1000", "wider.single.ms_per_image",
               "model.total_params"]
    names = ["headless", "full"]
    store = Store(tmp_path)
    for seed, variant in enumerate(names):
        store.begin(SUITE, variant, 0, variant, {}, {"started": "2025-01-01"})
        values = {m: 0.75031 + 0.0259 * seed for m in metrics} | {
            "train.flops": 1.825e13, "train.tokens": 2000.0, "train.tokens_per_s": 14.0}
        store.finish(variant, values, [], {}, {})
    spec = _spec(metrics, variants=names, baseline="headless", reference={}, curve="curve.loss")
    html = render_mod.render_html(tmp_path / "index.sqlite", spec,
                                  load_suite_data(tmp_path / "index.sqlite", SUITE))
    lines = {}
    for page in weasyprint.HTML(string=html).render().pages:
        stack = [page._page_box]
        while stack:
            box = stack.pop()
            if isinstance(box, boxes.TableCellBox) and "name" in (
                    box.element.get("class") or "").split() and box.element.text in names:
                lines[box.element.text] = len(box.children)
            stack.extend(getattr(box, "children", []))
    assert lines == {"headless": 1, "full": 1}


def test_a_pdf_lists_a_bounded_number_of_runs_per_variant(tmp_path: Path) -> None:
    """Thousands of runs: the HTML lists every one, the PDF the first few of each variant, and
    figures draw that many seeds thin while their means cover every run."""
    n = layout.PDF_RUNS_PER_VARIANT + 5
    store = Store(tmp_path)
    for variant in ("a", "b"):
        for seed in range(n if variant == "a" else 2):
            run_id = f"{variant}-{seed}"
            store.begin(SUITE, variant, seed, run_id, {}, {"started": "2025-01-01"})
            curve = [{"step": s, "flops": s * 1e9, "tokens": s, "val_nll": 5.0 - s - seed * 1e-3}
                     for s in (1, 2)]
            store.finish(run_id, {"acc": 0.5 + seed * 1e-3}, curve, {}, {})
    spec = _spec(["acc"], variants=["a", "b"], baseline="a", reference={}, curve="curve.val_nll")
    html = render_mod.render_html(tmp_path / "index.sqlite", spec,
                                  load_suite_data(tmp_path / "index.sqlite", SUITE))
    assert html.count('class="screen-only"') == 2 * 5  # the per-seed and provenance tables
    assert f"a (mean of {n}; {layout.PDF_RUNS_PER_VARIANT} drawn thin)" in html
    assert "5 more are in the HTML report" in html
    printed = {}
    for page in weasyprint.HTML(string=html).render().pages:
        stack = [page._page_box]
        while stack:
            box = stack.pop()
            if isinstance(box, boxes.TableCellBox) and box.element.text in ("a", "b"):
                printed[box.element.text] = printed.get(box.element.text, 0) + 1
            stack.extend(getattr(box, "children", []))
    main_rows = 1  # the main table names each variant once too
    assert printed["a"] == main_rows + 2 * layout.PDF_RUNS_PER_VARIANT
    assert printed["b"] == main_rows + 2 * 2


KEY_TABLES = ("main", "comparison", "efficiency", "ratios")


def _placed(html: str) -> tuple[dict[int, set[int]], int | None, set[int]]:
    """Where the PDF layout puts things: each key table (by its element) -> the pages it is on;
    the page of the 'Results by variant' heading; the pages holding the main table's rows."""
    tables: dict[int, set[int]] = {}
    heading, main_rows = None, set()
    for number, page in enumerate(weasyprint.HTML(string=html).render().pages):
        stack = [page._page_box]
        while stack:
            box = stack.pop()
            element = getattr(box, "element", None)
            if isinstance(box, boxes.TableBox) and element is not None \
                    and element.get("class") in KEY_TABLES:
                tables.setdefault(id(element), set()).add(number)
                if element.get("class") == "main":
                    main_rows.add(number)
            if element is not None and element.tag == "h2" and \
                    "".join(element.itertext()).strip() == "Results by variant":
                heading = number if heading is None else heading
            stack.extend(getattr(box, "children", []))
    return tables, heading, main_rows


@pytest.mark.slow
def test_key_tables_stay_whole_on_a_page_under_their_heading(tmp_path: Path) -> None:
    """However far down the page the results begin (more or fewer notes above them), no key
    table is split across pages and the main table starts on its heading's page."""
    index = tmp_path / "index.sqlite"
    build_index(index)
    data = load_suite_data(index, "cwt-demo")
    for n in range(0, 44, 4):
        notes = [f"note {i}: " + "a sentence of a note long enough to wrap its line " * 3
                 for i in range(n)]
        html = render_mod.render_html(index, make_spec(notes=notes), data)
        tables, heading, main_rows = _placed(html)
        assert tables and all(len(pages) == 1 for pages in tables.values()), (n, tables)
        assert heading is not None and heading == min(main_rows), (n, heading, main_rows)
