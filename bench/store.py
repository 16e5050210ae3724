"""The results store: one folder per run, and a SQLite index that reports read.

A run counts as finished only when its folder is complete and the index says so, and the index
is written last, in one transaction; a crash at any earlier point leaves the run 'running' (it
resumes from its checkpoints) or 'failed', never 'finished' with missing parts.
"""

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.atomic import write_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, suite TEXT, variant TEXT, seed INTEGER,
  state TEXT, reason TEXT, path TEXT, config TEXT, provenance TEXT,
  started TEXT, ended TEXT);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT, suite TEXT, variant TEXT, seed INTEGER,
  metric TEXT, value REAL, step INTEGER, flops REAL, tokens REAL);
CREATE INDEX IF NOT EXISTS metrics_by_suite ON metrics (suite, metric);
CREATE TABLE IF NOT EXISTS points (
  run_id TEXT, suite TEXT, variant TEXT, seed INTEGER,
  curve TEXT, idx INTEGER, x REAL, y REAL);
"""


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


class Store:
    """`root/<suite>/<run-id>/` folders plus `root/index.sqlite`."""

    def __init__(self, root: Path):
        self.root = root
        self.index_path = root / "index.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.index_path, timeout=60)
        con.executescript(SCHEMA)
        return con

    def run_dir(self, suite: str, run_id: str) -> Path:
        return self.root / suite / run_id

    def state(self, run_id: str) -> str | None:
        if not self.index_path.exists():
            return None
        with closing(self._connect()) as con:
            row = con.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def begin(self, suite: str, variant: str, seed: int, run_id: str, config: dict[str, Any],
              provenance: dict[str, Any]) -> Path:
        """Create the run's folder and mark it running (its earlier metrics are dropped)."""
        path = self.run_dir(suite, run_id)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / "config.json", config)
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            con.execute("DELETE FROM points WHERE run_id = ?", (run_id,))
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, suite, variant, seed, "running", None, str(path),
                 json.dumps(config, sort_keys=True), json.dumps(provenance, default=str),
                 provenance.get("started"), None))
        return path

    def finish(self, run_id: str, metrics: dict[str, float], curve: list[dict[str, Any]],
               provenance: dict[str, Any], curve_metrics: dict[str, str],
               points: dict[str, tuple[list[float], list[float]]] | None = None) -> None:
        """Mark finished with its final metrics, training-curve rows and evaluation curves
        (PR, ROC: name -> (x, y)), in one transaction.

        `curve_metrics` maps curve columns to metric names, e.g. {'val_nll': 'curve.val_nll'}.
        """
        with closing(self._connect()) as con, con:
            run = con.execute("SELECT suite, variant, seed FROM runs WHERE run_id = ?",
                              (run_id,)).fetchone()
            suite, variant, seed = run
            rows = [(run_id, suite, variant, seed, m, float(v), None, None, None)
                    for m, v in metrics.items()]
            for point in curve:
                for column, metric in curve_metrics.items():
                    if point.get(column) is not None:
                        rows.append((run_id, suite, variant, seed, metric, float(point[column]),
                                     point["step"], point["flops"], point["tokens"]))
            con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", rows)
            con.execute("DELETE FROM points WHERE run_id = ?", (run_id,))
            con.executemany("INSERT INTO points VALUES (?,?,?,?,?,?,?,?)", [
                (run_id, suite, variant, seed, name, i, float(x), float(y))
                for name, (xs, ys) in (points or {}).items()
                for i, (x, y) in enumerate(zip(xs, ys, strict=True))])
            con.execute("UPDATE runs SET state='finished', reason=NULL, provenance=?, ended=? "
                        "WHERE run_id=?",
                        (json.dumps(provenance, default=str), provenance.get("ended"), run_id))

    def fail(self, run_id: str, reason: str, ended: str, state: str = "failed") -> None:
        """Mark a run that ended without finishing: 'failed', or 'pruned' by a sweep."""
        with closing(self._connect()) as con, con:
            con.execute("UPDATE runs SET state=?, reason=?, ended=? WHERE run_id=?",
                        (state, reason, ended, run_id))

    def runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Runs with their key facts, newest first (for `bench ls`)."""
        if not self.index_path.exists():
            return []
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            query = "SELECT run_id, suite, variant, seed, state, reason, started, ended FROM runs"
            args: tuple = ()
            if suite:
                query, args = query + " WHERE suite = ?", (suite,)
            runs = [dict(r) for r in con.execute(query + " ORDER BY started DESC", args)]
            for run in runs:
                run["metrics"] = _final_metrics(con, run["run_id"])
        return runs

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """A run's final metrics (empty for an unknown run)."""
        if not self.index_path.exists():
            return {}
        with closing(self._connect()) as con:
            return _final_metrics(con, run_id)


def _final_metrics(con: sqlite3.Connection, run_id: str) -> dict[str, float]:
    return dict(con.execute("SELECT metric, value FROM metrics WHERE run_id = ? AND step IS NULL",
                            (run_id,)).fetchall())
