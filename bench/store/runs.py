"""The results store: one folder per run, which is the run's record (its files: see
bench/store/folder.py), and an index derived from the folders for reports and listings
(bench/store/index.py).

Every change of a run's state happens under its folder's lock, and a process writes only the
folders of the runs it holds (besides removing, once it finished, the branch checkpoint a lower
rung of a wsd ladder started from in its longest rung's folder): a cluster job needs nothing
shared but the folder. A run is finished exactly when its folder says so; a crash at any earlier
point leaves it 'running' (it resumes from its checkpoints) or 'failed'.
"""

import glob
import json
import math
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ClaimRefused, UserError
from bench.store.claims import (
    Owner,
    drop_claim,
    heartbeat,
    holder_alive,
    locked,
    read_claim,
    write_claim,
)
from bench.store.folder import (
    Unreadable,
    read_metrics,
    read_state,
    update_state,
    utf8_text,
    write_begun,
    write_results,
)
from bench.store.index import (
    Imported,
    import_folders,
    index_error,
    open_index,
    remove_stale_builds,
)
from bench.util.atomic import no_links


class Store:
    """`root/<suite>/<run-id>/` folders plus `root/index.sqlite`.

    With `indexes` each change this store makes to a run is imported into the index at once.
    By default a store indexes unless it is in a cluster job: jobs write their run folders only,
    and whoever reads the index imports what changed first."""

    def __init__(self, root: Path, owner: Owner | None = None, indexes: bool | None = None):
        self.root = root
        self.index_path = root / "index.sqlite"
        self.owner = owner or Owner.this_process()
        self.indexes = self.owner.job is None if indexes is None else indexes
        self._index_warned = False
        self._swept = False  # whether this store removed what killed rebuilds left
        self._begun: dict[str, Path] = {}  # run id -> folder, for the runs this store began
        self.skipped: list[str] = []  # the folders the latest import could not read, and why

    def run_dir(self, suite: str, run_id: str) -> Path:
        return self.root / suite / run_id

    def folder(self, run_id: str) -> Path | None:
        """The folder of run `run_id`: the one this store began, else one in any suite, None
        when there is none."""
        if run_id in self._begun:
            return self._begun[run_id]
        if not self.root.is_dir():
            return None
        found = [p for p in self.root.glob(f"*/{glob.escape(run_id)}") if p.is_dir()]
        return found[0] if found else None

    # --- a run's record, in its folder ---

    def state(self, run_id: str) -> str | None:
        """The run's state as its folder records it (None for a run never begun)."""
        folder = self.folder(run_id)
        state = None if folder is None else _state_of(folder)
        return None if state is None else state["state"]

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """A finished run's final metrics (empty for any other)."""
        folder = self.folder(run_id)
        state = None if folder is None else _state_of(folder)
        if folder is None or state is None or state["state"] != "finished":
            return {}
        return _readable(folder, lambda: read_metrics(folder))

    def begin(self, suite: str, variant: str, seed: int, run_id: str, config: dict[str, Any],
              provenance: dict[str, Any]) -> Path:
        """Claim the run for this store's owner, mark it running and write its config and
        provenance, under the folder's lock.

        Refused (ClaimRefused) when the run is finished, or held by a live process (see
        `bench.store.claims.holder_alive`). A dead holder's claim is taken over, and the run resumes
        from its checkpoints. A link standing for the run's folder, or its suite's, is refused
        (LinkRefused), never written through.
        """
        path = no_links(self.root, self.run_dir(suite, run_id))
        with locked(path):
            self._check_claimable(path, run_id)
            try:
                write_claim(path, self.owner)
                write_begun(path, {"run_id": run_id, "suite": suite, "variant": variant,
                                   "seed": seed}, config, provenance)
            except BaseException:
                drop_claim(path)
                raise
        self._begun[run_id] = path
        self._indexed(suite, run_id)
        return path

    def claim_refusal(self, run_id: str) -> ClaimRefused | None:
        """Why `begin` would refuse the run now, None if it would not (a preview, for what to
        print: `begin` decides again under the lock)."""
        folder = self.folder(run_id)
        if folder is None:
            return None
        try:
            self._check_claimable(folder, run_id)
        except ClaimRefused as e:
            return e
        return None

    def _check_claimable(self, folder: Path, run_id: str) -> None:
        """A finished run is never claimed again; a live holder keeps its run."""
        state = _state_of(folder, strict=False)
        if state is not None and state["state"] == "finished":
            raise ClaimRefused(run_id, "finished", "finished")
        holder = read_claim(folder)
        if (holder is not None and holder.token != self.owner.token
                and holder_alive(holder, folder, self.owner)):
            raise ClaimRefused(run_id, "running", f"running in {holder.describe()}")

    @contextmanager
    def _holding(self, run_id: str) -> Iterator[Path]:
        """Under its lock, the folder of a run this store holds; ClaimRefused for any other."""
        folder = self._existing(run_id)
        with locked(folder):
            holder = read_claim(folder)
            if holder is None or holder.token != self.owner.token:
                state = _state_of(folder, strict=False)
                status = (state["state"] if state else "unknown") + (
                    "" if holder is None else f" in {holder.describe()}")
                raise ClaimRefused(run_id, state["state"] if state else None, status)
            yield folder

    def finish(self, run_id: str, metrics: dict[str, float], curve: list[dict[str, Any]],
               provenance: dict[str, Any],
               points: dict[str, tuple[list[float], list[float]]] | None = None) -> None:
        """Write the run's results (final metrics, training curve, evaluation curves such as
        PR and ROC: name -> (x, y), provenance), then mark it finished and let go of it."""
        with self._holding(run_id) as folder:
            write_results(folder, metrics, curve, points or {}, provenance)
            update_state(folder, state="finished", reason=None, ended=provenance.get("ended"))
            drop_claim(folder)
        self._indexed(folder.parent.name, run_id)

    def fail(self, run_id: str, reason: str, ended: str, state: str = "failed") -> None:
        """Mark a run that ended without finishing: 'failed', or 'pruned' by a sweep. A reason
        is recorded as UTF-8 text (see `bench.store.folder.utf8_text`)."""
        text = utf8_text(reason)
        with self._holding(run_id) as folder:
            update_state(folder, state=state, reason=text, ended=ended)
            drop_claim(folder)
        self._indexed(folder.parent.name, run_id)

    def release(self, run_id: str) -> None:
        """Give up this store's claim on a running run, which stays 'running': the next
        `bench run` resumes it without waiting for this process to end. Nothing but the claim
        file's removal is written, so it works on a full disk."""
        with self._holding(run_id) as folder:
            drop_claim(folder)
        self._indexed(folder.parent.name, run_id)

    def reap(self, run_id: str, job: str, reason: str, ended: str) -> bool:
        """Record as failed a run whose cluster job `job` ended without recording how the run
        ended (killed, out of memory, a node lost): only while the run is still 'running' and
        held by that job or by nobody. Returns whether it was recorded."""
        folder = self.folder(run_id)
        if folder is None:
            return False
        with locked(folder):
            state, holder = _state_of(folder, strict=False), read_claim(folder)
            if state is None or state["state"] != "running":
                return False
            if holder is not None and holder.job != job:
                return False
            update_state(folder, state="failed", reason=reason, ended=ended)
            drop_claim(folder)
        self._indexed(folder.parent.name, run_id)
        return True

    @contextmanager
    def heartbeat(self, run_id: str) -> Iterator[None]:
        """Tell other machines that this store's run is alive while the body runs."""
        with heartbeat(self._existing(run_id)):
            yield

    def _existing(self, run_id: str) -> Path:
        """The run's folder; ClaimRefused when it has none (so nobody can hold it)."""
        folder = self.folder(run_id)
        if folder is None:
            raise ClaimRefused(run_id, None, "not in the results folder")
        return folder

    # --- the index, derived from the folders ---

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            remove_stale_builds(self.root)
            self._swept = True
        return open_index(self.index_path)

    def sync(self, suite: str | None = None, run_id: str | None = None) -> Imported:
        """Import into the index what changed in the run folders (one run's, one suite's or
        all); folders that cannot be read are skipped and named (also in `self.skipped`). An
        index that cannot be read or written is a UserError naming it (a damaged one with its
        remedy)."""
        try:
            return self._import(suite, run_id)
        except sqlite3.Error as err:
            raise index_error(self.index_path, err) from err

    def _import(self, suite: str | None, run_id: str | None) -> Imported:
        with closing(self._connect()) as con:
            imported = import_folders(con, self.root, suite, run_id)
        self.skipped = imported.skipped
        return imported

    def _indexed(self, suite: str, run_id: str) -> None:
        """Import one run after this store changed it. The folder already holds the change, so
        an index that cannot be written (a full disk) is a warning: any later import or
        `bench index --rebuild` catches up."""
        if not self.indexes:
            return
        try:
            self._import(suite, run_id)
        except (OSError, sqlite3.Error, UserError) as err:
            if not self._index_warned:
                print(f"warning: could not update the results index {self.index_path} ({err}); "
                      "the run folders hold every result, and the next bench command that "
                      "reads the index (or bench index --rebuild) imports them",
                      file=sys.stderr)
            self._index_warned = True

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads; a file found damaged anywhere in them is a UserError."""
        with closing(self._connect()) as con:
            try:
                yield con
            except sqlite3.DatabaseError as err:
                raise index_error(self.index_path, err) from err

    def runs(self, suite: str | None = None) -> list[dict[str, Any]]:
        """Runs with their key facts (the budget as its config's JSON text), newest first (for
        `bench ls`), the index brought up to date first."""
        if not self.root.is_dir():
            return []
        self.sync(suite)
        where, args = ("WHERE suite = ?", (suite,)) if suite else ("", ())
        with self._reading() as con:
            con.row_factory = sqlite3.Row
            runs = [dict(r, metrics={}) for r in con.execute(
                "SELECT run_id, suite, variant, seed, state, reason, started, ended, "
                "CASE WHEN json_valid(config) THEN json_extract(config, '$.budget') END "
                f"AS budget FROM runs {where} "
                "ORDER BY started DESC", args)]
            con.row_factory = None
            by_id = {run["run_id"]: run["metrics"] for run in runs}
            # One read of every final metric, in the order written: a later row wins. SQLite
            # keeps a NaN as NULL.
            for run_id, metric, value in con.execute(
                    "SELECT run_id, metric, value FROM metrics WHERE step IS NULL AND run_id IN "
                    f"(SELECT run_id FROM runs {where}) ORDER BY rowid", args):
                by_id[run_id][metric] = math.nan if value is None else value
        return runs

    def recorded(self, suite: str) -> list["Recorded"]:
        """The suite's runs as their folders recorded them (id, variant, seed, state, the
        config with the paths it was read from, the input fingerprints): one read that tells
        which planned runs already ran, under which id, on which inputs."""
        if not (self.root / suite).is_dir():
            return []
        self.sync(suite)
        with self._reading() as con:
            rows = con.execute("SELECT run_id, variant, seed, state, config, provenance FROM runs "
                               "WHERE suite = ?", (suite,)).fetchall()
        return [Recorded(run_id, variant, seed, state, json.loads(config or "{}"),
                         json.loads(prov or "{}").get("inputs", {}))
                for run_id, variant, seed, state, config, prov in rows]


@dataclass(frozen=True)
class Recorded:
    """A run of the store as its folder recorded it (`Store.recorded`)."""

    run_id: str
    variant: str
    seed: int
    state: str
    config: dict[str, Any]  # the resolved config, with the paths its inputs were read from
    inputs: dict[str, dict[str, str]]  # label -> path, sha256 (provenance)


def _readable(folder: Path, read: Any) -> Any:
    """`read()`, a folder file that cannot be read being a UserError naming it."""
    try:
        return read()
    except Unreadable as err:
        raise UserError(f"{folder}: {err}") from None


def _state_of(folder: Path, strict: bool = True) -> dict[str, Any] | None:
    """The folder's state.json; one that cannot be read is a UserError, or with `strict`
    off, as good as none (the run is then claimed and its record written afresh)."""
    try:
        return read_state(folder)
    except Unreadable as err:
        if strict:
            raise UserError(f"{folder}: {err}") from None
        return None


