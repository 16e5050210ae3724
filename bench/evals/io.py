"""File handling shared by the evaluators and their commands: reading a user's text file with an
error that names it, and writing the optional --json and --plot outputs."""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.atomic import write_text
from bench.errors import UserError
from bench.evals.curves import PRCurve, ROCCurve


def read_lines(path: Path, expected: str = "a UTF-8 text file") -> list[str]:
    """The file's lines; a missing or unreadable file is a UserError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
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


def write_outputs(payload: dict[str, Any], curves: Sequence[PRCurve | ROCCurve], title: str,
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
