"""Reads of the results index for reports: a suite's runs, its finished runs' metric rows and
evaluation curves, the runs of a study. Every statement is read-only and runs on a connection
that cannot write, so a report never changes the index it reads."""

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.store.index import index_error

FINISHED = "finished"
# The runs table's own columns (a report reads none of the claim columns).
RUN_COLUMNS = ("run_id", "suite", "variant", "seed", "state", "reason", "path", "config",
               "provenance", "started", "ended")
POINT_COLUMNS = ("run_id", "curve", "idx", "x", "y")
STUDY_RUN_COLUMNS = ("run_id", "state", "config")


@dataclass(frozen=True)
class SuiteRows:
    """One suite's rows of the index as the queries return them (a report shapes them)."""

    runs: pd.DataFrame  # RUN_COLUMNS of every run, by variant, seed and run id
    metrics: pd.DataFrame  # the finished runs' metric rows, `row_order` first, in written order
    points: pd.DataFrame  # POINT_COLUMNS of every run's evaluation curves, by index


def read_only(index_path: Path) -> "closing[sqlite3.Connection]":
    """A read-only connection to the results index."""
    return closing(sqlite3.connect(index_path.resolve().as_uri() + "?mode=ro", uri=True))


def suite_rows(index_path: Path, suite: str, curves: Sequence[str] | None = None) -> SuiteRows:
    """The suite's runs, its finished runs' metric rows (every final one, and of the curve rows
    only those of `curves`; all when None) and its evaluation curves (none in an index from
    before they were kept). An index that cannot be read is a UserError naming it."""
    try:
        with read_only(index_path) as con:
            runs = pd.read_sql_query(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE suite = ? "
                "ORDER BY variant, seed, run_id",
                con,
                params=(suite,),
            )
            return SuiteRows(runs, _finished_metrics(con, suite, curves), _points(con, suite))
    except (sqlite3.Error, pd.errors.DatabaseError) as err:
        raise index_error(index_path, err) from err


def _finished_metrics(con: sqlite3.Connection, suite: str, curves: Sequence[str] | None
                      ) -> pd.DataFrame:
    """The metric rows of the suite's finished runs: every final one, and the curve rows of
    `curves` (all when None), in the order they were written."""
    args: tuple[str, ...]
    wanted, args = "", (suite, suite)
    if curves is not None:
        wanted = f"AND (step IS NULL OR metric IN ({', '.join('?' * len(curves))})) "
        args += tuple(curves)
    return pd.read_sql_query(
        "SELECT rowid AS row_order, * FROM metrics WHERE suite = ? AND run_id IN "
        f"(SELECT run_id FROM runs WHERE suite = ? AND state = '{FINISHED}') "
        f"{wanted}ORDER BY rowid", con, params=args)


def _points(con: sqlite3.Connection, suite: str) -> pd.DataFrame:
    """The suite's evaluation-curve points by index; no rows where the index has no `points`."""
    has_points = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'points'"
    ).fetchone()
    columns = ", ".join(POINT_COLUMNS)
    if has_points:
        return pd.read_sql_query(f"SELECT {columns} FROM points WHERE suite = ? ORDER BY idx",
                                 con, params=(suite,))
    nulls = ", ".join(f"NULL AS {c}" for c in POINT_COLUMNS)
    return pd.read_sql_query(f"SELECT {nulls} WHERE 0", con)


def study_runs(index_path: Path, suite: str) -> pd.DataFrame:
    """The STUDY_RUN_COLUMNS of a study's runs (its trials are runs of the suite named after
    it), by run id; none when the index does not exist yet. An index that cannot be read is a
    UserError naming it."""
    if not index_path.is_file():
        return pd.DataFrame(columns=list(STUDY_RUN_COLUMNS))
    try:
        with read_only(index_path) as con:
            return pd.read_sql_query(f"SELECT {', '.join(STUDY_RUN_COLUMNS)} FROM runs "
                                     "WHERE suite = ? ORDER BY run_id", con, params=(suite,))
    except (sqlite3.Error, pd.errors.DatabaseError) as err:
        raise index_error(index_path, err) from err
