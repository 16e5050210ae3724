"""The results index: a SQLite file derived from the run folders, for reports and listings.

The run folders are the record (see bench/store/runs.py); the index is imported from them by the
processes that read it (`bench run` as it submits and watches, `bench status`, `bench ls`,
`bench report`) and never by a cluster job, so only processes on one machine write it (SQLite's
locks do not hold over network file systems). An import reads only the folders whose record
changed since the last one (a stamp of their files' sizes and times), and `rebuild_index`
imports every folder into a new file: both go through `_index_folder`, so they agree row for row.

Every value comes from the folder's files as bench/store/folder.py reads and checks them; a
folder whose files it finds unreadable is skipped and named. SQLite stores NaN as NULL, which
readers show as NaN.
"""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.store.claims import CLAIM, is_text, read_claim
from bench.store.folder import (
    Unreadable,
    curve_metrics,
    folder_state,
    json_file,
    read_provenance,
    read_results,
    utf8_text,
)
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


def index_error(path: Path, err: Exception) -> UserError:
    """An index that cannot be read, as an error naming the file; a damaged one, with its remedy.
    (pandas wraps the sqlite3 error it met as its cause.)"""
    cause = err if isinstance(err, sqlite3.Error) else err.__cause__
    if getattr(cause, "sqlite_errorname", "").startswith(DAMAGED):
        return UserError(f"{path}: not a valid index ({cause}); "
                         "rebuild it with bench index --rebuild")
    return UserError(f"{path}: not a readable results index ({err})")


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


def _index_folder(con: sqlite3.Connection, folder: Path) -> None:
    """One run's rows, read from its folder; Unreadable when a file is missing or malformed."""
    config = json_file(folder / "config.json", dict)
    provenance = read_provenance(folder)
    state = folder_state(folder, config, provenance or {})
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


