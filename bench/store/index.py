"""The results index: a SQLite file derived from the run folders, for reports and listings.

The run folders are the record (see bench/store/runs.py); the index is imported from them by the
processes that read it (`bench run` as it submits and watches, `bench status`, `bench ls`,
`bench report`) and never by a cluster job, so only processes on one machine write it (SQLite's
locks do not hold over network file systems). An import reads only the folders whose record
changed since the last one (a stamp of their files' sizes and times), and `rebuild_index`
imports every folder into a new file: both go through `_index_folder`, so they agree row for row.

Every value read from a folder is checked before it reaches the index, as a folder may hold
anything that was written to a shared file system: JSON nested at most `MAX_DEPTH` deep, text
that UTF-8 holds, whole numbers that fit SQLite's 64-bit integers (seeds, steps; a bool is not
one), metric and curve values that a double holds. NaN and infinities are recorded values (a
metric undefined or infinite for a run, a PR curve's undefined precision): SQLite stores NaN as
NULL, which readers show as NaN. A folder whose files break these rules is skipped and named.
"""

import csv
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from bench.errors import UserError
from bench.store.claims import CLAIM, is_text, read_claim
from bench.util.atomic import remove_stale_temporaries, write_via

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, suite TEXT, variant TEXT, seed INTEGER,
  state TEXT, reason TEXT, path TEXT, config TEXT, provenance TEXT,
  started TEXT, ended TEXT);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT, suite TEXT, variant TEXT, seed INTEGER,
  metric TEXT, value REAL, step INTEGER, flops REAL, tokens REAL);
CREATE INDEX IF NOT EXISTS metrics_by_suite ON metrics (suite, metric);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id);
CREATE INDEX IF NOT EXISTS final_metrics ON metrics (run_id, metric, value) WHERE step IS NULL;
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite);
CREATE TABLE IF NOT EXISTS points (
  run_id TEXT, suite TEXT, variant TEXT, seed INTEGER,
  curve TEXT, idx INTEGER, x REAL, y REAL);
CREATE INDEX IF NOT EXISTS points_by_run ON points (run_id);
CREATE INDEX IF NOT EXISTS points_by_suite ON points (suite);
CREATE TABLE IF NOT EXISTS imported (run_id TEXT PRIMARY KEY, suite TEXT, stamp TEXT);
CREATE INDEX IF NOT EXISTS imported_by_suite ON imported (suite);
"""
# sqlite3 error names of a file that is not (or no longer) a database.
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
# Who held a run when it was imported (its claim file); added to `runs` by `_add_owner_columns`.
OWNER_COLUMNS = {"owner_host": "TEXT", "owner_pid": "INTEGER", "owner_since": "TEXT",
                 "owner_token": "TEXT", "owner_job": "TEXT"}
_RUN_COLUMNS = ("run_id", "suite", "variant", "seed", "state", "reason", "path", "config",
                "provenance", "started", "ended", *OWNER_COLUMNS)
# One run's row, by column name (an index from before claims has the owner columns added last).
INSERT_RUN = (f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(_RUN_COLUMNS))})")
# The files whose sizes and times stamp a folder's import: a change to any is re-imported.
STAMPED = ("state.json", CLAIM, "config.json", "metrics.json")
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


def index_error(path: Path, err: Exception) -> UserError:
    """An index that cannot be read, as an error naming the file; a damaged one, with its remedy.
    (pandas wraps the sqlite3 error it met as its cause.)"""
    cause = err if isinstance(err, sqlite3.Error) else err.__cause__
    if getattr(cause, "sqlite_errorname", "").startswith(DAMAGED):
        return UserError(f"{path}: not a valid index ({cause}); "
                         "rebuild it with bench index --rebuild")
    return UserError(f"{path}: not a readable results index ({err})")


def curve_metrics(curve: list[dict[str, Any]]) -> dict[str, str]:
    """The training-curve columns that become metric rows, and their metric names: the loss as
    'curve.train_loss', every validation column 'val_*' as 'curve.val_*'."""
    return {"loss": "curve.train_loss"} | {
        k: f"curve.{k}" for r in curve for k in r if k.startswith("val_")}


def json_column(obj: Any) -> str:
    """A JSON column of the index (config, provenance): keys sorted, so that the text is the
    same whether written from the running process or rebuilt from the folder's file."""
    return json.dumps(obj, sort_keys=True, default=str)


def _add_owner_columns(con: sqlite3.Connection) -> None:
    """Give an index written by an older version the owner columns (under the write lock, as
    two processes may find them missing at once)."""
    def missing() -> list[str]:
        have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        return [c for c in OWNER_COLUMNS if c not in have]

    if missing():
        con.execute("BEGIN IMMEDIATE")
        for column in missing():
            con.execute(f"ALTER TABLE runs ADD COLUMN {column} {OWNER_COLUMNS[column]}")
        con.commit()


def open_index(path: Path) -> sqlite3.Connection:
    """A connection to the index file at `path`, its schema created or brought up to date; a
    damaged file, a folder in its place or one that cannot be opened is a UserError naming it."""
    try:
        con = sqlite3.connect(path, timeout=60)
    except sqlite3.Error as err:
        _check_not_folder(path)
        raise index_error(path, err) from err
    try:
        con.executescript(SCHEMA)
        _add_owner_columns(con)
    except sqlite3.Error as err:
        con.close()
        _check_not_folder(path)
        raise index_error(path, err) from err
    return con


def _check_not_folder(path: Path) -> None:
    """A folder where the index file belongs is a UserError naming it: SQLite cannot open it,
    and a rebuild would not replace it (it is not the index's to delete)."""
    if path.is_dir():
        raise UserError(f"{path}: a folder where the results index file belongs; move it out of "
                        "the way (bench index --rebuild then writes the index from the run "
                        "folders)")


def remove_stale_builds(root: Path) -> None:
    """Remove what a killed `rebuild_index` left in `root`: its temporary index once untouched
    for a while (see bench.util.atomic) and that temporary's journal. Called by each rebuild and
    once by each Store, as it first opens the index; a leftover that cannot be removed, or that
    a rebuild killed later leaves, waits for the next call."""
    with suppress(OSError):
        for tmp in remove_stale_temporaries(root):
            tmp.with_name(tmp.name + "-journal").unlink(missing_ok=True)


@dataclass(frozen=True)
class Imported:
    """What an import indexed, and the folders it skipped ('folder: why')."""

    runs: int
    skipped: list[str]


def import_folders(con: sqlite3.Connection, root: Path, suite: str | None = None,
                   run_id: str | None = None) -> Imported:
    """Bring the index up to date with the run folders under `root` (all, one suite's, or one
    run's of that suite), in one transaction: changed folders are indexed again, vanished ones
    dropped."""
    args: tuple[str, ...]
    scope, args = "", ()
    if suite is not None:
        scope, args = "WHERE suite = ?", (suite,)
        if run_id is not None:
            scope, args = "WHERE suite = ? AND run_id = ?", (suite, run_id)
    con.execute("BEGIN IMMEDIATE")
    try:
        known = dict(con.execute(f"SELECT run_id, stamp FROM imported {scope}", args))
        seen, indexed, skipped = set(), 0, []
        for folder in _run_folders(root, suite, run_id):
            if not (is_text(folder.name) and is_text(folder.parent.name)):
                skipped.append(f"{utf8_text(str(folder))}: a name that is not UTF-8 text")
                continue
            seen.add(folder.name)
            stamp = _stamp(folder)
            if known.get(folder.name) == stamp:
                continue
            other = con.execute("SELECT suite FROM imported WHERE run_id = ? AND suite != ?",
                                (folder.name, folder.parent.name)).fetchone()
            if other is not None:
                skipped.append(f"{folder}: run id {folder.name} already indexed from suite "
                               f"{other[0]}'s folder")
                continue
            _forget(con, folder.name)
            try:
                _index_folder(con, folder)
            except Unreadable as err:
                skipped.append(f"{folder}: {err}")
                continue
            con.execute("INSERT INTO imported VALUES (?,?,?)",
                        (folder.name, folder.parent.name, stamp))
            indexed += 1
        for gone in set(known) - seen:
            _forget(con, gone)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return Imported(indexed, skipped)


def rebuild_index(root: Path) -> Imported:
    """Index `root` again from its run folders alone (`root/<suite>/<run-id>/`). The new index
    is built beside the old one and replaces it whole, so a damaged index can be rebuilt and a
    failed rebuild leaves the old one as it was. It equals the index that imports kept up to
    date; what processes record while it runs is imported by the next reader."""
    if not root.is_dir():
        raise UserError(f"{root}: no results folder to rebuild an index from")
    index_path = root / "index.sqlite"
    _check_not_folder(index_path)
    remove_stale_builds(root)
    done: list[Imported] = []

    def build(tmp: Path) -> None:
        with closing(open_index(tmp)) as con:
            done.append(import_folders(con, root))
        # A journal left by a crashed writer of the old file would be played into the new one.
        index_path.with_name(index_path.name + "-journal").unlink(missing_ok=True)

    write_via(index_path, build)
    return done[0]


def _forget(con: sqlite3.Connection, run_id: str) -> None:
    for table in ("runs", "metrics", "points", "imported"):
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def _stamp(folder: Path) -> str:
    """Sizes, inodes and modification times of the files that make a folder's record."""
    parts = []
    for name in STAMPED:
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _run_folders(root: Path, suite: str | None = None, run_id: str | None = None
                 ) -> Iterator[Path]:
    """Every `root/<suite>/<run-id>/` folder, in name order (hidden ones are not runs)."""
    if suite is not None and run_id is not None:
        yield from [root / suite / run_id] if (root / suite / run_id).is_dir() else []
        return
    if not root.is_dir():
        return
    suites = [root / suite] if suite else sorted(root.iterdir())
    for folder in suites:
        if folder.is_dir() and not folder.name.startswith("."):
            yield from (run for run in sorted(folder.iterdir())
                        if run.is_dir() and not run.name.startswith("."))


def insert_results(con: sqlite3.Connection, run: tuple[str, str, str, int],
                   metrics: dict[str, float], curve: list[dict[str, Any]],
                   points: dict[str, tuple[list[float], list[float]]]) -> None:
    """Index a finished run's final metrics, its training-curve rows (`curve_metrics`) and its
    evaluation curves (name -> (x, y)). `run` is (run_id, suite, variant, seed)."""
    columns = curve_metrics(curve)
    con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)",
                    [(*run, m, float(v), None, None, None) for m, v in metrics.items()])
    con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", [
        (*run, metric, float(point[column]), point["step"], float(point["flops"]),
         float(point["tokens"]))
        for point in curve for column, metric in columns.items()
        if point.get(column) is not None])
    con.executemany("INSERT INTO points VALUES (?,?,?,?,?,?,?,?)", [
        (*run, name, i, float(x), float(y)) for name, (xs, ys) in points.items()
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))])


class Unreadable(ValueError):
    """A run folder that cannot be indexed: what is wrong, naming the file."""


def _index_folder(con: sqlite3.Connection, folder: Path) -> None:
    """One run's rows, read from its folder; Unreadable when a file is missing or malformed."""
    config = json_file(folder / "config.json", dict)
    provenance = _read_provenance(folder)
    state = _folder_state(folder, config, provenance or {})
    owner = read_claim(folder)
    run = (folder.name, folder.parent.name, state["variant"], state["seed"])
    results = read_results(folder) if state["state"] == "finished" else None
    held = (None,) * len(OWNER_COLUMNS) if owner is None else (
        owner.host, owner.pid, owner.since, owner.token, owner.job)
    con.execute(INSERT_RUN, (
        *run, state["state"], state.get("reason"), str(folder), json_column(config),
        None if provenance is None else json_column(provenance), state.get("started"),
        state.get("ended"), *held))
    if results is not None:
        insert_results(con, run, *results)


def read_results(folder: Path) -> tuple[dict[str, float], list[dict[str, Any]],
                                         dict[str, tuple[list[float], list[float]]]]:
    """A finished run's final metrics, training curve and evaluation curves."""
    return read_metrics(folder), _read_curve(folder / "curve.csv"), _read_points(folder)


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


def _read_provenance(folder: Path) -> dict[str, Any] | None:
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


def _folder_state(folder: Path, config: dict[str, Any], prov: dict[str, Any]
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
    try:
        _check_size(path)
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Unreadable(f"{path.name}: missing") from None
    except RecursionError:
        raise Unreadable(f"{path.name}: {_TOO_DEEP}") from None
    except (OSError, ValueError) as err:  # JSON, UTF-8, an integer past Python's digit limit
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


def _check_size(path: Path) -> None:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise Unreadable(f"{path.name}: larger than {MAX_FILE_BYTES >> 20} MiB")


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


def _read_curve(path: Path) -> list[dict[str, Any]]:
    """curve.csv as the training loop logged it: numbers as numbers, empty cells as None."""
    try:
        _check_size(path)
        with path.open(newline="", encoding="utf-8") as f:
            cells = list(csv.DictReader(f))
    except FileNotFoundError:
        raise Unreadable(f"{path.name}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise Unreadable(f"{path.name}: {err}") from None
    rows = []
    for line, row in enumerate(cells, 2):
        if None in row:  # csv's key for the cells past the header's
            raise Unreadable(f"{path.name}:{line}: more cells than the header names")
        rows.append({k: _cell(v) for k, v in row.items()})
    measured = curve_metrics(rows)
    for line, row in enumerate(rows, 2):
        step = row.get("step")
        bad = [] if is_int64(step) and step >= 0 else ["step"]
        bad += [c for c in ("flops", "tokens") if not is_real(row.get(c))]
        bad += [c for c in measured if row.get(c) is not None and not is_real(row[c])]
        if bad:
            expected = "a whole number of 64 bits" if bad[0] == "step" else "a number"
            raise Unreadable(f"{path.name}:{line}: column '{bad[0]}': expected {expected}")
    return rows


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


def _read_points(folder: Path) -> dict[str, tuple[list[float], list[float]]]:
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

