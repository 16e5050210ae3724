"""The results store: one folder per run, and a SQLite index that reports read.

A run counts as finished only when its folder is complete and the index says so, and the index
is written last, in one transaction; a crash at any earlier point leaves the run 'running' (it
resumes from its checkpoints) or 'failed', never 'finished' with missing parts.
"""

import csv
import hashlib
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import write_text, write_via
from bench.errors import ClaimRefused, UserError

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
"""
# sqlite3 error names of a file that is not (or no longer) a database.
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


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


def _insert_results(con: sqlite3.Connection, run: tuple[str, str, str, int],
                    metrics: dict[str, float], curve: list[dict[str, Any]],
                    curve_metrics: dict[str, str],
                    points: dict[str, tuple[list[float], list[float]]]) -> None:
    """Index a finished run's final metrics, its training-curve rows (`curve_metrics`: curve
    column -> metric name) and its evaluation curves (name -> (x, y)).
    `run` is (run_id, suite, variant, seed)."""
    con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)",
                    [(*run, m, float(v), None, None, None) for m, v in metrics.items()])
    con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", [
        (*run, metric, float(point[column]), point["step"], point["flops"], point["tokens"])
        for point in curve for column, metric in curve_metrics.items()
        if point.get(column) is not None])
    con.executemany("INSERT INTO points VALUES (?,?,?,?,?,?,?,?)", [
        (*run, name, i, float(x), float(y)) for name, (xs, ys) in points.items()
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))])


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


# Who holds a run's claim; added to `runs` by `_add_owner_columns`.
OWNER_COLUMNS = {"owner_host": "TEXT", "owner_pid": "INTEGER", "owner_since": "TEXT",
                 "owner_token": "TEXT"}
_RUN_COLUMNS = ("run_id", "suite", "variant", "seed", "state", "reason", "path", "config",
                "provenance", "started", "ended", *OWNER_COLUMNS)
# One run's row, by column name (an index from before claims has the owner columns added last).
INSERT_RUN = (f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(_RUN_COLUMNS))})")


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, Linux's /proc), None when there is
    no such process: with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before it may hold spaces


@dataclass(frozen=True)
class Owner:
    """A claimant: a process on a host, and a token unique to one Store (two stores in one
    process are two claimants)."""

    host: str
    pid: int
    since: str | None  # the process's start time, see _process_start
    token: str

    @classmethod
    def this_process(cls) -> "Owner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid), uuid.uuid4().hex)

    def alive(self) -> bool:
        """Whether the owning process still runs; meaningful on the owner's host only."""
        return _process_start(self.pid) == self.since


def _add_owner_columns(con: sqlite3.Connection) -> None:
    """Give an index written before claims existed the owner columns (under the write lock, as
    two processes may find them missing at once)."""
    def missing() -> list[str]:
        have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
        return [c for c in OWNER_COLUMNS if c not in have]

    if missing():
        con.execute("BEGIN IMMEDIATE")
        for column in missing():
            con.execute(f"ALTER TABLE runs ADD COLUMN {column} {OWNER_COLUMNS[column]}")
        con.commit()


def _holder(con: sqlite3.Connection, run_id: str) -> tuple[str | None, Owner | None]:
    """The run's state and the owner of its claim (None, None for a run not in the index)."""
    row = con.execute("SELECT state, owner_host, owner_pid, owner_since, owner_token FROM runs "
                      "WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None, None
    state, *owner = row
    return state, Owner(*owner) if owner[-1] else None


def _status(state: str | None, holder: Owner | None) -> str:
    """A run's state in words, e.g. 'running in process 1234 on host gpu-3'."""
    if state is None:
        return "not in the index"
    return state if holder is None else f"{state} in process {holder.pid} on host {holder.host}"


def open_index(path: Path) -> sqlite3.Connection:
    """A connection to the index file at `path`, its schema created or brought up to date; a
    damaged file is a UserError naming it."""
    con = sqlite3.connect(path, timeout=60)
    try:
        con.executescript(SCHEMA)
        _add_owner_columns(con)
    except sqlite3.DatabaseError as err:
        con.close()
        raise index_error(path, err) from err
    return con


class Store:
    """`root/<suite>/<run-id>/` folders plus `root/index.sqlite`."""

    def __init__(self, root: Path, owner: Owner | None = None):
        self.root = root
        self.index_path = root / "index.sqlite"
        self.owner = owner or Owner.this_process()

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        return open_index(self.index_path)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads; a file found damaged anywhere in them is a UserError."""
        with closing(self._connect()) as con:
            try:
                yield con
            except sqlite3.DatabaseError as err:
                raise index_error(self.index_path, err) from err

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the index's write lock from its first read (BEGIN
        IMMEDIATE), so that what it checks cannot change before it writes."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.commit()
            except BaseException:
                if con.in_transaction:
                    con.rollback()
                raise

    def run_dir(self, suite: str, run_id: str) -> Path:
        return self.root / suite / run_id

    def state(self, run_id: str) -> str | None:
        if not self.index_path.exists():
            return None
        with self._reading() as con:
            row = con.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def begin(self, suite: str, variant: str, seed: int, run_id: str, config: dict[str, Any],
              provenance: dict[str, Any]) -> Path:
        """Claim the run for this store's owner, mark it running (its earlier metrics are
        dropped) and write its folder's config.json and state.json, all or nothing.

        Refused (ClaimRefused) when the run is finished, or held by another live process on
        this host. A claim left by a dead process is taken over, and the run resumes from its
        checkpoints. So is a claim from another host: an index is not shared between hosts
        (SQLite's locks do not hold over network file systems), so such a claim came with a
        results folder moved here, and its process cannot be writing to it.
        """
        path = self.run_dir(suite, run_id)
        with self._transaction() as con:
            self._check_claimable(con, run_id)
            con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            con.execute("DELETE FROM points WHERE run_id = ?", (run_id,))
            o = self.owner
            con.execute(
                INSERT_RUN.replace("INSERT", "INSERT OR REPLACE", 1),
                (run_id, suite, variant, seed, "running", None, str(path),
                 json_column(config), json_column(provenance),
                 provenance.get("started"), None, o.host, o.pid, o.since, o.token))
            path.mkdir(parents=True, exist_ok=True)
            write_json(path / "config.json", config)
            write_json(path / "provenance.json", provenance)  # the finished run's replaces it
            _write_state(con, run_id)
        return path

    def claim_refusal(self, run_id: str) -> ClaimRefused | None:
        """Why `begin` would refuse the run now, None if it would not (a preview, for what to
        print: `begin` decides again under the write lock)."""
        if not self.index_path.exists():
            return None
        with closing(self._connect()) as con:
            try:
                self._check_claimable(con, run_id)
            except ClaimRefused as e:
                return e
        return None

    def _check_claimable(self, con: sqlite3.Connection, run_id: str) -> None:
        """A finished run is never claimed again; a live claimant on this host keeps its run."""
        state, holder = _holder(con, run_id)
        if state == "finished" or (
                state == "running" and holder is not None and holder.token != self.owner.token
                and holder.host == self.owner.host and holder.alive()):
            raise ClaimRefused(run_id, state, _status(state, holder))

    def _check_held(self, con: sqlite3.Connection, run_id: str) -> None:
        """Only the holder of a running run's claim may record how it ended."""
        state, holder = _holder(con, run_id)
        if state != "running" or holder is None or holder.token != self.owner.token:
            raise ClaimRefused(run_id, state, _status(state, holder))

    def finish(self, run_id: str, metrics: dict[str, float], curve: list[dict[str, Any]],
               provenance: dict[str, Any], curve_metrics: dict[str, str],
               points: dict[str, tuple[list[float], list[float]]] | None = None) -> None:
        """Mark finished with its final metrics, training-curve rows and evaluation curves
        (PR, ROC: name -> (x, y)), in one transaction.

        `curve_metrics` maps curve columns to metric names, e.g. {'val_nll': 'curve.val_nll'}.
        """
        with self._transaction() as con:
            self._check_held(con, run_id)
            run = con.execute("SELECT suite, variant, seed FROM runs WHERE run_id = ?",
                              (run_id,)).fetchone()
            con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            con.execute("DELETE FROM points WHERE run_id = ?", (run_id,))
            _insert_results(con, (run_id, *run), metrics, curve, curve_metrics, points or {})
            con.execute("UPDATE runs SET state='finished', reason=NULL, provenance=?, ended=? "
                        "WHERE run_id=?",
                        (json_column(provenance), provenance.get("ended"), run_id))
            _write_state(con, run_id)

    def fail(self, run_id: str, reason: str, ended: str, state: str = "failed") -> None:
        """Mark a run that ended without finishing: 'failed', or 'pruned' by a sweep."""
        with self._transaction() as con:
            self._check_held(con, run_id)
            con.execute("UPDATE runs SET state=?, reason=?, ended=? WHERE run_id=?",
                        (state, reason, ended, run_id))
            _write_state(con, run_id)

    def release(self, run_id: str) -> None:
        """Give up this store's claim on a running run, which stays 'running': the next
        `bench run` resumes it without waiting for this process to end. The folder's
        state.json is left as it was (its owner then names a claim no longer held)."""
        with self._transaction() as con:
            self._check_held(con, run_id)
            con.execute("UPDATE runs SET owner_host=NULL, owner_pid=NULL, owner_since=NULL, "
                        "owner_token=NULL WHERE run_id=?", (run_id,))

    def runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Runs with their key facts, newest first (for `bench ls`)."""
        if not self.index_path.exists():
            return []
        where, args = ("WHERE suite = ?", (suite,)) if suite else ("", ())
        with self._reading() as con:
            con.row_factory = sqlite3.Row
            runs = [dict(r, metrics={}) for r in con.execute(
                "SELECT run_id, suite, variant, seed, state, reason, started, ended FROM runs "
                f"{where} ORDER BY started DESC", args)]
            con.row_factory = None
            by_id = {run["run_id"]: run["metrics"] for run in runs}
            # One read of every final metric, in the order written: a later row wins.
            for run_id, metric, value in con.execute(
                    "SELECT run_id, metric, value FROM metrics WHERE step IS NULL AND run_id IN "
                    f"(SELECT run_id FROM runs {where}) ORDER BY rowid", args):
                by_id[run_id][metric] = value
        return runs

    def runs_by_config(self, suite: str) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
        """The suite's runs keyed by (variant, seed, config as `json_column` writes it), each
        with its run id, state and the input fingerprints its provenance recorded: one read
        that tells which planned runs already ran, on which inputs."""
        if not self.index_path.exists():
            return {}
        with self._reading() as con:
            rows = con.execute("SELECT variant, seed, config, run_id, state, provenance FROM runs "
                               "WHERE suite = ?", (suite,)).fetchall()
        found: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        for variant, seed, config, run_id, state, prov in rows:
            found.setdefault((variant, seed, config), []).append(
                {"run_id": run_id, "state": state,
                 "inputs": json.loads(prov or "{}").get("inputs", {})})
        return found

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """A run's final metrics (empty for an unknown run)."""
        if not self.index_path.exists():
            return {}
        with self._reading() as con:
            return _final_metrics(con, run_id)


def _write_state(con: sqlite3.Connection, run_id: str) -> None:
    """Mirror the run's record in the index to `<run>/state.json`, inside the transaction that
    changed it: a file that cannot be written rolls the change back, so the folder never says
    less than the index (a rebuild from folders reads it).
    """
    con.row_factory = sqlite3.Row
    row = dict(con.execute("SELECT run_id, suite, variant, seed, state, reason, started, ended, "
                           "path, owner_host, owner_pid, owner_since, owner_token FROM runs "
                           "WHERE run_id = ?", (run_id,)).fetchone())
    con.row_factory = None
    path = Path(row.pop("path"))
    owner = {k.removeprefix("owner_"): row.pop(k) for k in OWNER_COLUMNS}
    write_json(path / "state.json", row | {"owner": owner if owner["token"] else None})


def _final_metrics(con: sqlite3.Connection, run_id: str) -> dict[str, float]:
    return dict(con.execute("SELECT metric, value FROM metrics WHERE run_id = ? AND step IS NULL",
                            (run_id,)).fetchall())


# A run folder's files are small; anything larger is not one of ours (and is not read whole).
MAX_FILE_BYTES = 256 * 2**20


class Unreadable(ValueError):
    """A run folder that cannot be indexed: what is wrong, naming the file."""


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild indexed, and the folders it skipped ('folder: why')."""

    runs: int
    skipped: list[str]


def rebuild_index(root: Path) -> Rebuilt:
    """Index `root` again from its run folders alone (`root/<suite>/<run-id>/`), the same rows
    the running processes wrote. The new index is built beside the old one and replaces it
    whole, so a damaged index can be rebuilt and a failed rebuild leaves the old one as it was.
    Run it while no `bench run` writes to `root`: what they record meanwhile is not in it."""
    if not root.is_dir():
        raise UserError(f"{root}: no results folder to rebuild an index from")
    index_path = root / "index.sqlite"
    indexed: list[Path] = []
    skipped: list[str] = []

    def build(tmp: Path) -> None:
        with closing(open_index(tmp)) as con, con:
            for folder in _run_folders(root):
                try:
                    _index_folder(con, folder)
                except Unreadable as err:
                    skipped.append(f"{folder}: {err}")
                else:
                    indexed.append(folder)
        # A journal left by a crashed writer of the old file would be played into the new one.
        index_path.with_name(index_path.name + "-journal").unlink(missing_ok=True)

    write_via(index_path, build)
    return Rebuilt(len(indexed), skipped)


def _run_folders(root: Path) -> Iterator[Path]:
    """Every `root/<suite>/<run-id>/` folder, in name order (hidden ones are not runs)."""
    for suite in sorted(root.iterdir()):
        if suite.is_dir() and not suite.name.startswith("."):
            yield from (run for run in sorted(suite.iterdir())
                        if run.is_dir() and not run.name.startswith("."))


def _index_folder(con: sqlite3.Connection, folder: Path) -> None:
    """One run's rows, read from its folder; Unreadable when a file is missing or malformed."""
    config = _json_file(folder / "config.json", dict)
    state = _folder_state(folder, config)
    prov_path = folder / "provenance.json"
    provenance = _json_file(prov_path, dict) if prov_path.exists() else None
    owner = state.get("owner") or {}
    run = (folder.name, folder.parent.name, state["variant"], state["seed"])
    results = _read_results(folder) if state["state"] == "finished" else None
    try:
        con.execute(
            INSERT_RUN,
            (*run, state["state"], state.get("reason"), str(folder), json_column(config),
             None if provenance is None else json_column(provenance), state.get("started"),
             state.get("ended"), *(owner.get(k.removeprefix("owner_")) for k in OWNER_COLUMNS)))
    except sqlite3.IntegrityError:
        raise Unreadable(f"run id {folder.name} already indexed from another suite's folder"
                         ) from None
    if results is not None:
        metrics, curve, points = results
        _insert_results(con, run, metrics, curve, curve_metrics(curve), points)


def _read_results(folder: Path) -> tuple[dict[str, float], list[dict[str, Any]],
                                          dict[str, tuple[list[float], list[float]]]]:
    """A finished run's final metrics, training curve and evaluation curves."""
    metrics = _json_file(folder / "metrics.json", dict)
    _check_numbers("metrics.json", metrics.values())
    return metrics, _read_curve(folder / "curve.csv"), _read_points(folder)


def _folder_state(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The run's record from its state.json; for a folder written before there was one, its
    state inferred (finished when it holds metrics.json, else failed) and its variant named
    after its config, which is all the folder says of it."""
    path = folder / "state.json"
    if path.exists():
        state = _json_file(path, dict)
        for key, kind in (("variant", str), ("seed", int), ("state", str)):
            if not isinstance(state.get(key), kind):
                raise Unreadable(f"{path.name}: field '{key}': expected a {kind.__name__}")
        for key, kinds in (("reason", str), ("started", str), ("ended", str), ("owner", dict)):
            if not isinstance(state.get(key), kinds | None):
                raise Unreadable(f"{path.name}: field '{key}': expected a {kinds.__name__} "
                                 "or null")
        owner = state.get("owner") or {}
        if not all(isinstance(v, str | int | None) for v in owner.values()):
            raise Unreadable(f"{path.name}: field 'owner': expected texts and numbers")
        return state
    if not isinstance(config.get("seed"), int):
        raise Unreadable("config.json: field 'seed': expected an int (and no state.json)")
    digest = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "seed"},
                                       sort_keys=True).encode()).hexdigest()[:8]
    finished = (folder / "metrics.json").exists()
    prov_path = folder / "provenance.json"
    prov = _json_file(prov_path, dict) if prov_path.exists() else {}
    return {"variant": f"config-{digest}", "seed": config["seed"],
            "state": "finished" if finished else "failed",
            "reason": None if finished else "no state.json or metrics.json: ended unfinished",
            "started": prov.get("started"), "ended": prov.get("ended") if finished else None}


def _json_file(path: Path, kind: type) -> Any:
    """A folder's JSON file, checked to be of `kind`."""
    try:
        _check_size(path)
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Unreadable(f"{path.name}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Unreadable(f"{path.name}: {err}") from None
    if not isinstance(value, kind):
        raise Unreadable(f"{path.name}: expected a JSON {kind.__name__}")
    return value


def _check_size(path: Path) -> None:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise Unreadable(f"{path.name}: larger than {MAX_FILE_BYTES >> 20} MiB")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numbers(name: str, values: Iterable[Any]) -> None:
    if not all(map(_is_number, values)):
        raise Unreadable(f"{name}: expected numbers as values")


def _read_curve(path: Path) -> list[dict[str, Any]]:
    """curve.csv as the training loop logged it: numbers as numbers, empty cells as None."""
    try:
        _check_size(path)
        with path.open(newline="", encoding="utf-8") as f:
            rows = [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise Unreadable(f"{path.name}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise Unreadable(f"{path.name}: {err}") from None
    measured = curve_metrics(rows)
    for line, row in enumerate(rows, 2):
        bad = [c for c in ("step", "flops", "tokens") if not _is_number(row.get(c))]
        bad += [c for c in measured if row.get(c) is not None and not _is_number(row[c])]
        if bad:
            raise Unreadable(f"{path.name}:{line}: column '{bad[0]}': expected a number")
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
    for name, xy in _json_file(path, dict).items():
        xs, ys = (xy.get(axis) if isinstance(xy, dict) else None for axis in ("x", "y"))
        if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys)):
            raise Unreadable(f"points.json: curve '{name}': expected x and y lists of one length")
        _check_numbers(f"points.json: curve '{name}'", [*xs, *ys])
        points[name] = (xs, ys)
    return points
