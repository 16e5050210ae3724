"""A report's table as a file, the one owner of each table format: LaTeX (booktabs) and
Markdown print the cells as the report does; CSV and JSON hold the unformatted numbers, one row
per variant (or per variant and metric, or per run), for pandas and other programs."""

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.report.layout import Cell, Table
from bench.report.tables import ReportTable

# Format name -> the suffix of its files (`bench export --out` picks the format by it).
FORMATS = {"latex": ".tex", "markdown": ".md", "csv": ".csv", "json": ".json"}
# Formats the HTML report links beside each of its tables.
LINKED = ("csv", "latex")
# Text-mode LaTeX for the characters that are not themselves in LaTeX, and for what the
# report's cells print beyond ASCII.
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "\n": " ", "\t": " ",
    "±": r"$\pm$", "×": r"$\times$", "−": r"$-$", "—": "---", "–": "--", "Δ": r"$\Delta$",
    "…": r"\ldots{}", "≤": r"$\leq$", "≥": r"$\geq$", "\u200b": "",
}


def format_for(fmt: str | None, out: str | None) -> str:
    """The format asked for, else the one `out`'s suffix names, else Markdown (for a
    terminal)."""
    if fmt is not None:
        return fmt
    if out is not None:
        suffix = Path(out).suffix.lower()
        for name, known in FORMATS.items():
            if suffix == known:
                return name
        raise UserError(f"--out {out}: its suffix names no format ({', '.join(FORMATS.values())}"
                        "); give --format")
    return "markdown"


def table_text(table: ReportTable, fmt: str, suite: str) -> str:
    """`table` in the format `fmt` (a key of FORMATS)."""
    if fmt == "latex":
        return latex(table.shown, table.caption, f"tab:{suite}-{table.name}")
    if fmt == "markdown":
        return markdown(table.shown, table.caption)
    if fmt == "csv":
        return tidy(table.numbers).to_csv(index=False, lineterminator="\n")
    return json.dumps({"suite": suite, "table": table.name, "caption": table.caption,
                       "rows": records(tidy(table.numbers))}, indent=1, allow_nan=False) + "\n"


def write_linked(tables: dict[str, ReportTable], folder: Path, suite: str) -> None:
    """Every table in each LINKED format, `<table><suffix>` in `folder` (a new one)."""
    folder.mkdir()
    for table in tables.values():
        for fmt in LINKED:
            path = folder / f"{table.name}{FORMATS[fmt]}"
            path.write_text(table_text(table, fmt, suite), encoding="utf-8")
            path.chmod(0o644)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """The numbers as a flat table: one column per field, the row keys (variant, metric)
    as columns; a paper table's (metric, field) columns become a row per variant and metric."""
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.stack(frame.columns.names[0], future_stack=True)
        frame.columns.name = None
    named = any(name is not None for name in frame.index.names)
    frame = frame.reset_index() if named else frame.reset_index(drop=True)
    if "n" in frame:  # counts stay whole where a paper table's ratio rows have none
        frame["n"] = frame["n"].astype("Int64")
    return frame


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON takes them: NaN as null, numpy numbers as Python's (floats whole)."""
    def plain(value: object) -> object:
        if value is pd.NA:
            return None
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else str(value)
        return value
    return [{str(k): plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def latex_escape(text: str) -> str:
    """`text` for LaTeX's text mode (pdflatex with its default UTF-8 input): special characters
    escaped, the report's symbols as macros, letters of the Latin alphabets kept, any other
    character named by its code point (`[U+2713]`), so that any name compiles."""
    out = []
    for ch in text:
        if ch in _LATEX:
            out.append(_LATEX[ch])
        elif ch.isprintable() and (ch.isascii() or (ch.isalpha() and ord(ch) < 0x250)):
            out.append(ch)
        else:
            out.append(f"[U+{ord(ch):04X}]")
    return "".join(out)


def _latex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text)
    classes = cell.cls.split()
    if "best" in classes:
        text = rf"\textbf{{{text}}}"
    if "paper" in classes:
        text = rf"\textit{{{text}}}"
    return text


def latex(table: Table, caption: str, label: str) -> str:
    """A booktabs `table` environment: grouped headers over \\cmidrule, numbers right-aligned,
    the best value of a column bold, the paper's rows in italics, the caption above."""
    align = "".join("r" if any("num" in row[j].cls.split() for row in table.rows) else "l"
                    for j in range(len(table.columns)))
    lines = [f"% {label.removeprefix('tab:')}: needs \\usepackage{{booktabs}}",
             r"\begin{table}[htbp]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{re.sub(r'[^A-Za-z0-9:.-]', '-', label)}}}",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if table.groups:
        heads, rules, start = [], [], 1
        for text, span in table.groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(text)}}}")
            if text:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines += [" & ".join(heads) + r" \\", " ".join(rules)]
    lines.append(" & ".join(latex_escape(c) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(_latex_cell(cell) for cell in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _markdown_escape(text: str) -> str:
    text = text.replace("\u200b", "").replace("\n", " ")
    return re.sub(r"([\\|*])", r"\\\1", text)


def markdown(table: Table, caption: str) -> str:
    """A pipe table (GitHub-flavoured): a grouped header's label before each of its columns,
    numbers right-aligned, the best value bold, the caption as a paragraph below."""
    labels = []
    for text, span in table.groups or [("", len(table.columns))]:
        labels += [text] * span
    header = [f"{group}: {column}" if group else column
              for group, column in zip(labels, table.columns, strict=True)]
    align = ["--:" if any("num" in row[j].cls.split() for row in table.rows) else ":--"
             for j in range(len(table.columns))]

    def cell(c: Cell) -> str:
        text = _markdown_escape(c.text)
        if "best" in c.cls.split():
            text = f"**{text}**"
        return f"*{text}*" if "paper" in c.cls.split() else text

    lines = ["| " + " | ".join(map(_markdown_escape, header)) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + f"\n\n{_markdown_escape(caption)}\n"
