"""A full disk while a suite runs: the failure is recorded with what could not be written, the
suite goes on, `bench run` exits 1 with a summary and no traceback; when even the record cannot
be written, stderr says so and the next `bench run` takes the run up again."""

import errno
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support.store_suite import write_suite

import bench.training.train
import bench.util.atomic
from bench.cli import main
from bench.store.runs import Store


class FullDisk:
    """Makes `bench.util.atomic`'s writes fail as they do on a full disk (ENOSPC from the write
    itself): those of checkpoints and, once `spreading`, every write after the first failure,
    until `lift`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, spreading: bool):
        self.real, self.spreading = bench.util.atomic.write_via, spreading
        self.on, self.full = True, False
        monkeypatch.setattr(bench.util.atomic, "write_via", self)  # every whole-file write

    def __call__(self, path: Path, write: Callable[[Path], object]) -> None:
        if self.on and (path.parent.name == "checkpoints" or (self.spreading and self.full)):
            self.full = True
            write = _no_space
        self.real(path, write)

    def lift(self) -> None:
        self.on = False


def _no_space(tmp: Path) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    return write_suite(tmp_path)


def bench_run(suite: Path, *extra: str) -> int:
    return main(["run", str(suite), "--results", str(suite.parent / "results"), "--no-progress",
                 *extra])


def index_rows(results: Path) -> dict[str, tuple]:
    with sqlite3.connect(results / "index.sqlite") as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT variant, state, reason, owner_token FROM runs")}


def test_no_space_for_a_checkpoint_is_a_recorded_failure(suite, monkeypatch, capsys):
    FullDisk(monkeypatch, spreading=False)
    assert bench_run(suite) == 1
    out, err = capsys.readouterr()
    assert "2 of 2 runs failed" in err and "Traceback" not in out + err
    run_dirs = list((suite.parent / "results" / "store-e2e").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        reason = ("no space left on device while writing "
                  f"{run_dir / 'checkpoints' / 'pretrain.pt'}")
        assert f"FAILED: {reason}" in out
        assert Store(suite.parent / "results").state(run_dir.name) == "failed"
        state = json.loads((run_dir / "state.json").read_text())
        assert (state["state"], state["reason"]) == ("failed", reason)


@pytest.mark.slow
def test_a_failure_that_cannot_be_recorded_is_said_and_retried(suite, monkeypatch, capsys):
    full = FullDisk(monkeypatch, spreading=True)
    assert bench_run(suite) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "2 of 2 runs failed" in err
    results = suite.parent / "results"
    (first,) = results.glob("store-e2e/*/checkpoints")
    assert (f"could not record that it failed in the results store (no space left on device "
            f"while writing {first.parent / 'state.json'})") in err
    assert "could not record its start in the results store (no space left" in err
    # the first run keeps its place, released: the next `bench run` resumes it at once
    assert index_rows(results) == {"softmax": ("running", None, None)}

    full.lift()  # space again
    assert bench_run(suite) == 0
    assert {v: s for v, (s, *_) in index_rows(results).items()} == {
        "softmax": "finished", "cwt": "finished"}


@pytest.mark.slow
def test_a_full_index_leaves_the_run_finished_in_its_folder(suite, monkeypatch, capsys):
    connect = Store._connect

    def no_room_to_grow(store: Store) -> sqlite3.Connection:
        con = connect(store)
        (pages,) = con.execute("PRAGMA page_count").fetchone()
        con.execute(f"PRAGMA max_page_count = {pages}")  # the index file cannot grow
        return con

    monkeypatch.setattr(Store, "_connect", no_room_to_grow)
    suite = write_suite(suite.parent, "{steps: 50}")  # its curve's rows outgrow a page
    assert bench_run(suite, "--only", "softmax") == 0  # the folder is the record
    out, err = capsys.readouterr()
    results = suite.parent / "results"
    assert (f"warning: could not update the results index {results / 'index.sqlite'} "
            "(database or disk is full)") in err
    assert "Traceback" not in out + err and err.count("warning: could not update") == 1
    (run_dir,) = results.glob("store-e2e/*")
    assert json.loads((run_dir / "state.json").read_text())["state"] == "finished"
    assert (run_dir / "metrics.json").exists() and (run_dir / "points.json").exists()

    monkeypatch.undo()  # room again: the next reader imports what the index missed
    (run,) = Store(results).runs()
    assert run["state"] == "finished" and "lambada.acc" in run["metrics"]


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_a_stopping_signal_during_a_write_is_handled_once_the_file_is_whole(tmp_path, signum):
    """SLURM's warning (submitit's handler: checkpoint, requeue, exit) and its SIGTERM (a
    cancellation or requeue: a job stops at once) arrive while a checkpoint is half written:
    raised there, the exit would surface as the write's error and fail the run."""
    def stopped(signum, frame):
        raise SystemExit(144)

    def signalled_midway(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signum)  # arrives while the file is half written
        tmp.write_bytes(b"half and the rest")

    previous = signal.signal(signum, stopped)
    try:
        with pytest.raises(SystemExit):
            bench.util.atomic.write_via(tmp_path / "a.bin", signalled_midway)
        assert (tmp_path / "a.bin").read_bytes() == b"half and the rest"
        assert signal.getsignal(signum) is stopped
    finally:
        signal.signal(signum, previous)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
