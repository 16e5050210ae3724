"""A run's folder, the record of the run: its files written here and read back here, every value
checked as it is read.

The folder holds config.json and provenance.json (written when the run begins; the finished
run's provenance replaces the first); state.json (running, finished, failed or pruned, with the
reason and times); claim.json and heartbeat while a process holds the run (bench/store/claims.py);
and once it finished, metrics.json, curve.csv and points.json, written before state.json says so.
Every file is written whole (bench/util/atomic.py), but for the live ones a training run keeps
(`LiveCurve`: curve.jsonl, appended to; progress.json, rewritten whole).

A folder may hold anything that was written to a shared file system, so every value is checked
before anything uses it: JSON nested at most `MAX_DEPTH` deep, text that UTF-8 holds, whole
numbers that fit SQLite's 64-bit integers (seeds, steps; a bool is not one), metric and curve
values that a double holds. NaN and infinities are recorded values (a metric undefined or
infinite for a run, a PR curve's undefined precision). A file that breaks these rules is
`Unreadable`, naming it.
"""

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeGuard

from bench.store.claims import is_text
from bench.util.atomic import NotAFile, open_append, open_read, write_text

# A run folder's files are small; anything larger is not one of ours (and is not read whole).
MAX_FILE_BYTES = 256 * 2**20
# A folder's JSON nests a few levels (a resolved config: suites nest at most 64 deep, see
# bench/config/yaml_source.py); deeper is not ours, and is refused before anything recurses into it.
MAX_DEPTH = 100
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
# SQLite's INTEGER: a signed 64-bit number.
INT64 = (-(2**63), 2**63 - 1)
# The states a run's folder records (bench/store/runs.py).
STATES = ("running", "finished", "failed", "pruned")


class Unreadable(ValueError):
    """A run folder that cannot be indexed: what is wrong, naming the file."""


# A finished run's record: what a tracker keeps of it as artefacts.
RECORD_FILES = ("config.json", "provenance.json", "metrics.json", "curve.csv", "points.json",
                "run.log")
CURVE_COLUMNS = ("stage", "step", "tokens", "flops", "loss", "lr", "wall")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def samples_file(name: str) -> str:
    """The file of an evaluation's per-example rows in a run folder (`name`: the evaluator's,
    with its key where it keeps several: `glue_sst2`)."""
    return f"samples_{name}.jsonl"


def sample_names(folder: Path) -> list[str]:
    """The evaluations whose per-example rows a run folder holds, by name."""
    return sorted(p.name.removeprefix("samples_").removesuffix(".jsonl")
                  for p in folder.glob(samples_file("*")))


def read_samples(folder: Path, name: str) -> list[dict[str, Any]]:
    """A run's per-example rows of evaluation `name`: a JSON object a line, each checked as
    the folder's JSON files are (`Unreadable` names the file and line)."""
    path = folder / samples_file(name)
    try:
        text = _file_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise Unreadable(f"{path.name}: {err}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise Unreadable(f"{path.name}:{number}: {_TOO_DEEP}") from None
        except ValueError as err:
            raise Unreadable(f"{path.name}:{number}: {err}") from None
        problem = "expected a JSON object" if not isinstance(row, dict) else _tree_problem(row)
        if problem is not None:
            raise Unreadable(f"{path.name}:{number}: {problem}")
        rows.append(row)
    return rows


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    """The training curve as CSV: the standard columns first, then any others by name."""
    columns = list(CURVE_COLUMNS) + sorted({k for r in rows for k in r} - set(CURVE_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def write_begun(folder: Path, run: dict[str, Any], config: dict[str, Any],
                provenance: dict[str, Any]) -> None:
    """A begun run's files: its config, its provenance so far and its state, running. `run`
    names it (run_id, suite, variant, seed)."""
    write_json(folder / "config.json", config)
    write_json(folder / "provenance.json", provenance)  # the finished run's replaces it
    write_json(folder / "state.json", run | {
        "state": "running", "reason": None, "started": provenance.get("started"),
        "ended": None})


def write_results(folder: Path, metrics: dict[str, float], curve: list[dict[str, Any]],
                  points: dict[str, tuple[list[float], list[float]]],
                  provenance: dict[str, Any]) -> None:
    """A finished run's results (final metrics, training curve, evaluation curves: name ->
    (x, y)) and its final provenance, written before its state says finished."""
    write_curve(folder / "curve.csv", curve)
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "points.json",
               {name: {"x": xs, "y": ys} for name, (xs, ys) in points.items()})
    write_json(folder / "provenance.json", provenance)


def curve_metrics(curve: list[dict[str, Any]]) -> dict[str, str]:
    """The training-curve columns that become metric rows, and their metric names: the loss as
    'curve.train_loss', every validation column 'val_*' as 'curve.val_*'."""
    return {"loss": "curve.train_loss"} | {
        k: f"curve.{k}" for r in curve for k in r if k.startswith("val_")}


def read_results(folder: Path) -> tuple[dict[str, float], list[dict[str, Any]],
                                         dict[str, tuple[list[float], list[float]]]]:
    """A finished run's final metrics, training curve and evaluation curves."""
    return read_metrics(folder), read_curve(folder / "curve.csv"), read_points(folder)


def read_metrics(folder: Path) -> dict[str, float]:
    """A finished run's final metrics (metrics.json): names to numbers a double holds."""
    metrics = json_file(folder / "metrics.json", dict)
    for name, value in metrics.items():
        if not is_real(value):
            raise Unreadable(f"metrics.json: {name!r}: expected a number within a double's "
                             "range")
    return metrics


def read_state(folder: Path) -> dict[str, Any] | None:
    """The folder's state.json, checked; None when it has none."""
    path = folder / "state.json"
    if not path.exists():
        return None
    state = json_file(path, dict)
    for key, valid, expected in (
            ("variant", is_text, "a string"), ("seed", is_int64, "a whole number of 64 bits"),
            ("state", lambda v: v in STATES, "one of " + ", ".join(STATES))):
        if not valid(state.get(key)):
            raise Unreadable(f"{path.name}: field '{key}': expected {expected}")
    _check_text_fields(path.name, state, ("reason", "started", "ended"))
    return state


def _check_text_fields(name: str, record: dict[str, Any], keys: Iterable[str]) -> None:
    """Fields of a record that are text or null (times, a reason)."""
    for key in keys:
        if record.get(key) is not None and not is_text(record[key]):
            raise Unreadable(f"{name}: field '{key}': expected a string or null")


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """provenance.json (None without one), with the fields that readers of the index use
    checked: times, the input fingerprints (label -> path and sha256, bench/util/fingerprint.py)
    and the package versions (name -> version)."""
    path = folder / "provenance.json"
    if not path.exists():
        return None
    prov = json_file(path, dict)
    _check_text_fields(path.name, prov, ("started", "ended"))
    inputs = prov.get("inputs", {})
    if not (isinstance(inputs, dict) and all(
            isinstance(e, dict) and is_text(e.get("path")) and is_text(e.get("sha256"))
            for e in inputs.values())):
        raise Unreadable(f"{path.name}: field 'inputs': expected label -> {{path, sha256}}")
    if not isinstance(prov.get("packages") or {}, dict):
        raise Unreadable(f"{path.name}: field 'packages': expected name -> version")
    return prov


def folder_state(folder: Path, config: dict[str, Any], prov: dict[str, Any]
                  ) -> dict[str, Any]:
    """The run's record from its state.json; for a folder written before there was one, its
    state inferred (finished when it holds metrics.json, else failed) and its variant named
    after its config, which is all the folder says of it."""
    state = read_state(folder)
    if state is not None:
        return state
    if not is_int64(config.get("seed")):
        raise Unreadable("config.json: field 'seed': expected a whole number of 64 bits (and "
                         "no state.json)")
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "seed"},
                                       sort_keys=True).encode()).hexdigest()[:8]
    finished = (folder / "metrics.json").exists()
    return {"variant": f"config-{digest}", "seed": config["seed"],
            "state": "finished" if finished else "failed",
            "reason": None if finished else "no state.json or metrics.json: ended unfinished",
            "started": prov.get("started"), "ended": prov.get("ended") if finished else None}


def json_file(path: Path, kind: type) -> Any:
    """A folder's JSON file, checked to be of `kind`, nested at most `MAX_DEPTH` deep, its
    strings (keys included) text that UTF-8 holds."""
    raw = _file_bytes(path)
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise Unreadable(f"{path.name}: {_TOO_DEEP}") from None
    except ValueError as err:  # JSON, UTF-8, an integer past Python's digit limit
        raise Unreadable(f"{path.name}: {err}") from None
    if not isinstance(value, kind):
        raise Unreadable(f"{path.name}: expected a JSON {kind.__name__}")
    problem = _tree_problem(value)
    if problem is not None:
        raise Unreadable(f"{path.name}: {problem}")
    return value


def _tree_problem(value: Any) -> str | None:
    """What is wrong with parsed JSON (None when nothing): nesting past `MAX_DEPTH`, or a
    string UTF-8 cannot hold. Walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            if isinstance(item, str) and not is_text(item):
                return f"text that is not UTF-8 ({item[:40]!r})"
            continue
        if depth > MAX_DEPTH:
            return _TOO_DEEP
        stack.extend((child, depth + 1) for child in children)
    return None


def _file_bytes(path: Path) -> bytes:
    """What a folder's file holds, once it is found to be a regular file (a FIFO planted there
    would block the read) of at most `MAX_FILE_BYTES`."""
    try:
        with open_read(path, follow=True) as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                raise Unreadable(f"{path.name}: larger than {MAX_FILE_BYTES >> 20} MiB")
            return f.read()
    except FileNotFoundError:
        raise Unreadable(f"{path.name}: missing") from None
    except NotAFile as err:
        raise Unreadable(f"{path.name}: {err.kind}, not a regular file") from None
    except OSError as err:
        raise Unreadable(f"{path.name}: {err}") from None


def utf8_text(text: str) -> str:
    """`text` as UTF-8 holds it: a file's name that is not UTF-8, or an error naming one,
    carries the name's bytes as lone surrogates (Python's surrogateescape), which neither the
    index nor a terminal takes; they are written as the bytes' escapes (`\\xff`)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name gives
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def is_int64(value: Any) -> TypeGuard[int]:
    """A whole number that SQLite's INTEGER holds (a bool is not one)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and INT64[0] <= value <= INT64[1])


def is_real(value: Any) -> bool:
    """A number that a double holds, NaN and infinities included (a bool is not one)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:  # an integer past a double's range
        return False
    return True


def read_curve(path: Path) -> list[dict[str, Any]]:
    """curve.csv as the training loop logged it: numbers as numbers, empty cells as None."""
    raw = _file_bytes(path)
    try:
        cells = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as err:
        raise Unreadable(f"{path.name}: {err}") from None
    rows = []
    for line, row in enumerate(cells, 2):
        if None in row:  # csv's key for the cells past the header's
            raise Unreadable(f"{path.name}:{line}: more cells than the header names")
        rows.append({k: _cell(v) for k, v in row.items()})
    _check_curve(path.name, rows, first_line=2)
    return rows


def _check_curve(name: str, rows: list[dict[str, Any]], first_line: int) -> None:
    """Raise Unreadable naming the file's line and column where a curve row holds a step that
    is not a whole number >= 0, or a count or measured value that is not a number."""
    measured = curve_metrics(rows)
    for line, row in enumerate(rows, first_line):
        step = row.get("step")
        bad = [] if is_int64(step) and step >= 0 else ["step"]
        bad += [c for c in ("flops", "tokens") if not is_real(row.get(c))]
        bad += [c for c in measured if row.get(c) is not None and not is_real(row[c])]
        if bad:
            expected = "a whole number of 64 bits" if bad[0] == "step" else "a number"
            raise Unreadable(f"{name}:{line}: column '{bad[0]}': expected {expected}")


def _cell(text: str | None) -> Any:
    """A CSV cell back as the value written: int, float, None (empty) or the text itself."""
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_points(folder: Path) -> dict[str, tuple[list[float], list[float]]]:
    """The evaluation curves of points.json ({name: {"x": [...], "y": [...]}}), none without it."""
    path = folder / "points.json"
    if not path.exists():
        return {}
    points = {}
    for name, xy in json_file(path, dict).items():
        xs, ys = (xy.get(axis) if isinstance(xy, dict) else None for axis in ("x", "y"))
        if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
            raise Unreadable(f"points.json: curve {name!r}: expected x and y lists of one length")
        if not all(map(is_real, [*xs, *ys])):
            raise Unreadable(f"points.json: curve {name!r}: expected numbers within a double's "
                             "range")
        points[name] = (xs, ys)
    return points


def update_state(folder: Path, **changes: Any) -> None:
    """Change fields of a held run's state.json (written by `Store.begin`)."""
    state = read_state(folder)
    assert state is not None  # a held run's state.json was written by `begin`
    write_json(folder / "state.json", state | changes)


# While a run trains, its folder is live: `curve.jsonl` holds the training curve as it grows
# (the rows curve.csv will hold, on the same axis), `progress.json` where the run stands.
LIVE_CURVE = "curve.jsonl"
PROGRESS = "progress.json"


class LiveCurve:
    """curve.jsonl, one JSON row per line: rewritten whole where a stage (re)starts, with the
    rows its checkpoint holds (so rows trained after the last checkpoint by a killed process
    are dropped, as its training state is), then appended to as rows reach the host, made
    durable (fsync) where a checkpoint is saved."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LIVE_CURVE
        self._file: io.TextIOWrapper | None = None

    def restart(self, rows: list[dict[str, Any]]) -> None:
        self.close()
        write_jsonl(self.path, rows)
        self._file = open_append(self.path, "utf-8")  # a link planted meanwhile is replaced

    def append(self, rows: list[dict[str, Any]]) -> None:
        assert self._file is not None, "restart() comes first"
        self._file.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        self._file.flush()  # readers see every row at once

    def sync(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_live_curve(folder: Path) -> list[dict[str, Any]]:
    """curve.jsonl's rows, checked as curve.csv's are; a last line without its newline is a
    row being written (or cut by a kill) and is left out. None of it: no rows."""
    path = folder / LIVE_CURVE
    if not path.exists():
        return []
    try:
        text = _file_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise Unreadable(f"{path.name}: {err}") from None
    rows = []
    for line, raw in enumerate(text.split("\n")[:-1], 1):
        try:
            row = json.loads(raw)
        except ValueError as err:
            raise Unreadable(f"{path.name}:{line}: {err}") from None
        if not isinstance(row, dict) or _tree_problem(row) is not None:
            raise Unreadable(f"{path.name}:{line}: expected a JSON object of a curve row")
        rows.append(row)
    _check_curve(path.name, rows, first_line=1)
    return rows


def write_progress(folder: Path, progress: dict[str, Any]) -> None:
    write_json(folder / PROGRESS, progress)


# progress.json's fields and what each holds (None allowed where the loop does not know yet).
_PROGRESS_FIELDS: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    "stage": (is_text, "a stage's name", False),
    "stage_index": (lambda v: is_int64(v) and v >= 0, "a whole number >= 0", False),
    "stages": (lambda v: isinstance(v, list) and all(map(is_text, v)), "a list of names",
               False),
    "step": (lambda v: is_int64(v) and v >= 0, "a whole number >= 0", False),
    "horizon": (lambda v: is_int64(v) and v > 0, "a whole number > 0", True),
    "loss": (is_real, "a number", True),
    "seconds": (is_real, "a number", False),
    "began": (is_real, "a time in seconds", False),
    "since_step": (lambda v: is_int64(v) and v >= 0, "a whole number >= 0", False),
    "since": (is_real, "a time in seconds", False),
    "updated": (is_real, "a time in seconds", False),
    "validation": (lambda v: isinstance(v, dict) and all(map(is_real, v.values())),
                   "metrics as numbers", True),
    "validated_at": (lambda v: is_int64(v) and v >= 0, "a whole number >= 0", True),
}


def read_progress(folder: Path) -> dict[str, Any] | None:
    """progress.json, every field checked; None when the run has not trained here."""
    path = folder / PROGRESS
    if not path.exists():
        return None
    progress = json_file(path, dict)
    for name, (valid, expected, optional) in _PROGRESS_FIELDS.items():
        value = progress.get(name)
        if not (valid(value) or (optional and value is None)):
            raise Unreadable(f"{PROGRESS}: {name!r}: expected {expected}")
    return progress
