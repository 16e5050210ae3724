"""File handling shared by the evaluators and their commands: reading a user's text file with an
error that names it, quoting its text in errors (cut short), and writing the optional --json and
--plot outputs."""

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.evals.curves import Curve
from bench.util.atomic import write_text
from bench.util.paths import writable_output

SHOWN_CHARS = 80  # the most characters of a user's text an error message quotes


def shown(value: object) -> str:
    """`repr(value)` in at most SHOWN_CHARS characters, longer ones cut with an ellipsis: an error
    quotes enough of a junk line to recognise it, never all of it."""
    text = repr(value[:SHOWN_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def json_loads(text: str) -> Any:
    """json.loads with every failure a json.JSONDecodeError, including what json.loads raises
    otherwise: a number of more than 4,300 digits, nesting too deep for the parser."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        raise json.JSONDecodeError(str(e).split(";")[0], text, 0) from None


def read_lines(path: Path, expected: str = "a UTF-8 text file") -> list[str]:
    """The file's lines; a missing or unreadable file is a UserError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; expected {expected}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e}); expected {expected}") from None


def json_records(path: Path, expected: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line of a JSON-lines file, read one line at a
    time; a missing or unreadable file, a line that is not JSON or not an object is a UserError
    naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    record = json_loads(text)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not JSON ({e.msg}); expected {expected}"
                                    ) from None
                if not isinstance(record, dict):
                    raise UserError(f"{path}:{n}: a JSON {type(record).__name__}; expected "
                                    f"{expected}")
                yield n, record
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; expected {expected}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it ({e}); expected {expected}") from None


def json_safe(value: Any) -> Any:
    """JSON has no NaN (a precision of 0/0, a toolbox's NaN AP): it becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


PLOT_SUFFIXES = ("", ".svg", ".png", ".pdf")  # what `--plot` draws (no suffix: SVG)


def check_outputs(json_path: str | Path | None, plot_path: str | Path | None = None) -> None:
    """A command's --json and --plot outputs checked before it scores anything
    (`bench.util.paths.writable_output`)."""
    if json_path:
        writable_output(json_path, "--json")
    if plot_path:
        writable_output(plot_path, "--plot")
        if Path(plot_path).suffix.lower() not in PLOT_SUFFIXES:
            raise UserError(f"--plot {plot_path}: expected a .svg, .png or .pdf file")


def write_outputs(payload: dict[str, Any], curves: Sequence[Curve], title: str,
                  json_path: str | Path | None, plot_path: str | Path | None) -> None:
    """Write `payload` plus the curves as JSON, and the curves as a figure, where asked."""
    if json_path:
        out = {**payload, "curves": [c.to_dict() for c in curves]}
        write_text(Path(json_path), json.dumps(json_safe(out), indent=1) + "\n")
        print(f"wrote {json_path}")
    if plot_path:
        from bench.evals.plot import plot_curves

        plot_curves(curves, Path(plot_path), title)
        print(f"wrote {plot_path}")
