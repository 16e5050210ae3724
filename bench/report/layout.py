"""Tables as the template lays them out on A4: cells with their CSS class, header groups, the
leading columns that name a row, tables wider than the page split at column groups (each part
repeating the row names), and per-run rows past PDF_RUNS_PER_VARIANT kept to the screen."""

from collections import Counter
from dataclasses import dataclass, field, replace

# Table columns beyond which the PDF is laid out on landscape pages.
WIDE_COLUMNS = 10
# Rows per variant that the PDF prints of a per-run table (values, failures, provenance): the HTML
# lists every run, but a printed store of thousands of runs would be thousands of pages.
PDF_RUNS_PER_VARIANT = 25
# Width a table may take, in points: A4 less the 11 mm side margins of the template's @page;
# in landscape the body's max-width (60rem = 720 pt) is the narrower bound.
_MM = 72 / 25.4
CONTENT_WIDTH_PT = {"portrait": (210 - 22) * _MM, "landscape": min((297 - 22) * _MM, 720.0)}
# Upper bounds on the template's table text: 7.5 pt condensed sans, bold headers; per cell
# 3 pt padding each side and a border.
_CHAR_PT = 0.65 * 7.5
_CELL_PAD_PT = 7.0
# Characters kept on one line in a column whose text may wrap (names, headers).
_WRAP_CHARS = 14

@dataclass(frozen=True)
class Cell:
    """One formatted table cell; `cls` carries the CSS class (numbers, better/worse deltas)."""

    text: str
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A table ready for the template: optional grouped header row, column labels, cell rows."""

    columns: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)
    keep: int = 1  # leading columns that name a row, repeated in every part of a split table
    screen_only: frozenset[int] = frozenset()  # rows the HTML shows and the PDF leaves out

    @property
    def wide(self) -> bool:
        return len(self.columns) > WIDE_COLUMNS


def column_widths(table: Table) -> list[float]:
    """Each column's width in points if its numbers stay on one line (`td.num` does not wrap)
    and its names and header wrap after `_WRAP_CHARS` characters: an upper bound on the width
    the PDF layout needs for the column."""
    widths = []
    for j, label in enumerate(table.columns):
        cells = [row[j] for row in table.rows]
        numbers = [len(c.text) for c in cells if "num" in c.cls.split()]
        words = [len(w) for c in cells if "num" not in c.cls.split() for w in c.text.split()]
        words += [len(w) for w in label.split()]
        chars = max([*numbers, min(max(words, default=1), _WRAP_CHARS)])
        widths.append(chars * _CHAR_PT + _CELL_PAD_PT)
    return widths


def fit_width(table: Table, width_pt: float) -> list[Table]:
    """`table` as one or more tables that each fit `width_pt`: whole column blocks (header
    groups, or single columns) in order, each part repeating the `keep` leading columns."""
    widths = column_widths(table)
    head = sum(widths[: table.keep])
    parts: list[list[Block]] = [[]]
    used = head
    for block in _blocks(table):
        need = sum(widths[j] for j in block.columns)
        if parts[-1] and used + need > width_pt:
            parts.append([])
            used = head
        parts[-1].append(block)
        used += need
    if len(parts) == 1:
        return [table]
    return [_part(table, blocks) for blocks in parts]


@dataclass(frozen=True)
class Block:
    """Columns that stay together when a table is split, with their header group if any."""

    columns: range
    group: tuple[str, int] | None


def _blocks(table: Table) -> list[Block]:
    """The blocks after the `keep` leading columns: the header groups where the table has them
    (the first group must be the leading columns), else single columns."""
    if not table.groups:
        return [Block(range(j, j + 1), None) for j in range(table.keep, len(table.columns))]
    if table.groups[0][1] != table.keep:
        raise ValueError(f"the first header group must span the {table.keep} leading columns")
    blocks, start = [], 0
    for group in table.groups:
        blocks.append(Block(range(start, start + group[1]), group))
        start += group[1]
    return blocks[1:]


def _part(table: Table, blocks: list[Block]) -> Table:
    """The leading columns and those of `blocks`, with their header groups."""
    index = [*range(table.keep), *(j for b in blocks for j in b.columns)]
    groups = ([table.groups[0], *(b.group for b in blocks if b.group is not None)]
              if table.groups else [])
    return Table(columns=[table.columns[j] for j in index],
                 rows=[[row[j] for j in index] for row in table.rows],
                 groups=groups, keep=table.keep, screen_only=table.screen_only)


def printed_runs(table: Table) -> Table:
    """A per-run table (rows named by their variant in the first column) whose rows past the
    first PDF_RUNS_PER_VARIANT of each variant are left out of the PDF."""
    seen: Counter[str] = Counter()
    hidden = set()
    for i, row in enumerate(table.rows):
        seen[row[0].text] += 1
        if seen[row[0].text] > PDF_RUNS_PER_VARIANT:
            hidden.add(i)
    return replace(table, screen_only=frozenset(hidden))
