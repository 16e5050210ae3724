"""Render one suite's report: index (and study) -> tables and figures -> HTML (inline SVG) -> PDF.

The report is a pure function of the results index, the suite's study (when it has a sweep) and
the suite's report settings: it carries no render time and fetches nothing, so rendering twice
gives the same files. A suite with a sweep reports its study even before any of its own variants
has a finished run. The HTML and its PDF are renamed into place together, carrying one render id.
"""

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import jinja2
import weasyprint
from markupsafe import Markup

from bench.report.formatting import printable
from bench.report.layout import CONTENT_WIDTH_PT, fit_width
from bench.report.sections import variant_parts
from bench.report.spec import ReportSpec
from bench.report.study import SweepData, display_storage, load_sweep
from bench.report.suite_data import SuiteData, load_suite_data
from bench.report.sweep_section import sweep_section
from bench.report.table_files import FORMATS, LINKED, write_linked
from bench.report.tables import ReportTable, report_tables
from bench.report.verdicts import verdicts
from bench.util.atomic import remove_stale_temporaries

# Prefix of the render id in the HTML's keywords and the PDF's /Keywords.
RENDER_KEYWORD = "render "


def render_report(index_path: Path, spec: ReportSpec, out_dir: Path) -> tuple[Path, Path]:
    """Write out_dir/<suite>.html and out_dir/<suite>.pdf, each atomically; return both paths."""
    spec.check()
    study = load_sweep(spec.sweep, index_path) if spec.sweep is not None else None
    data = load_suite_data(index_path, spec.suite, required=spec.sweep is None,
                           curves=[spec.curve])
    return write_report(index_path, spec, data, study, out_dir)


def write_report(index_path: Path, spec: ReportSpec, data: SuiteData | None,
                 study: SweepData | None, out_dir: Path) -> tuple[Path, Path]:
    """Write the report of `data` (and `study`) as `render_report` does (`bench compare`
    hands in several suites' rows joined)."""
    tables = report_tables(spec, data) if data is not None else {}
    html = stamp(render_html(index_path, spec, data, study, tables))
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = out_dir / f"{spec.suite}.html", out_dir / f"{spec.suite}.pdf"
    write_pair(html, html_path, pdf_path,
               lambda folder: write_linked(tables, folder, spec.suite))
    return html_path, pdf_path


def tables_folder(suite: str) -> str:
    """The folder beside a suite's report that holds its tables' files, which the HTML links."""
    return f"{suite}-tables"


def render_id(html: str) -> str:
    """The id of one render: a hash of its HTML, so the same report gets the same id."""
    return hashlib.sha256(html.encode("utf-8")).hexdigest()[:16]


def stamp(html: str) -> str:
    """`html` with its render id as keywords metadata, which WeasyPrint copies into the PDF's
    /Keywords: an HTML and a PDF belong together when they carry the same id."""
    tag = f'<meta name="keywords" content="{RENDER_KEYWORD}{render_id(html)}">'
    return html.replace("<head>", f"<head>\n{tag}", 1)


def write_pair(html: str, html_path: Path, pdf_path: Path,
               write_tables: Callable[[Path], None]) -> None:
    """Write the HTML, its PDF and its tables' folder (`write_tables(folder)`) so that all
    come from one render: they are made as temporaries beside them first and renamed only once
    all exist, so a PDF that fails (or a kill while it is laid out) leaves the previous ones as
    they were."""
    remove_stale_temporaries(html_path.parent)  # what a killed render left
    folder = html_path.parent / tables_folder(html_path.stem)
    with tempfile.TemporaryDirectory(dir=html_path.parent, prefix=f".{html_path.stem}.",
                                     suffix=".tmp") as tmp:
        new_html, new_pdf = Path(tmp) / html_path.name, Path(tmp) / pdf_path.name
        new_tables = Path(tmp) / folder.name
        new_html.write_text(html, encoding="utf-8")
        weasyprint.HTML(string=html).write_pdf(new_pdf)
        write_tables(new_tables)
        for path in (new_html, new_pdf, new_tables):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if folder.is_dir() and not folder.is_symlink():  # a folder is not renamed over another
            os.replace(folder, Path(tmp) / "previous")
        elif folder.is_symlink():
            folder.unlink()
        os.replace(new_tables, folder)
        os.replace(new_pdf, pdf_path)
        os.replace(new_html, html_path)


def render_html(index_path: Path, spec: ReportSpec, data: SuiteData | None,
                study: SweepData | None = None,
                tables: "dict[str, ReportTable] | None" = None) -> str:
    """The whole report as one self-contained HTML document, linking the files of its `tables`
    (`report_tables`, made here where not given); without `data` (no finished run of the
    suite's variants) only the sweep is reported."""
    template = _environment().get_template("report.html.j2")
    if data is not None and tables is None:
        tables = report_tables(spec, data)
    parts = variant_parts(spec, data, {name: t.shown for name, t in tables.items()},
                          tables["main"].numbers) if data is not None and tables else {
        "variants": [], "main": None, "per_seed": None, "comparison": None, "verdicts": []}
    if data is not None and tables:
        parts["verdicts"] = verdicts(spec, parts["variants"], tables["main"].numbers)
    sweep = sweep_section(study) if study is not None else None
    wide = [parts["main"], parts["per_seed"], parts["comparison"], sweep and sweep.trials]
    orientation = "landscape" if any(t is not None and t.wide for t in wide) else "portrait"
    return template.render(
        spec=spec,
        index_path=str(index_path),
        sweep=sweep,
        sweep_storage=display_storage(spec.sweep.storage) if spec.sweep else None,
        page="A4 landscape" if orientation == "landscape" else "A4",
        fit=lambda table: fit_width(table, CONTENT_WIDTH_PT[orientation]),
        links={name: [(fmt.upper() if fmt == "csv" else "LaTeX",
                       f"{tables_folder(spec.suite)}/{name}{FORMATS[fmt]}") for fmt in LINKED]
               for name in tables or {}},
        **parts,
    )


def _finalize(value: object) -> object:
    """Every value the template prints: text from the index or the suite made `printable`
    (figures, already markup, are left as they are)."""
    return printable(value) if isinstance(value, str) and not isinstance(value, Markup) \
        else value


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
