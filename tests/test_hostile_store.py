"""A shared results folder holding anything: odd values in every file of a run folder, odd
files where files belong, odd holders (a start time not recorded, heartbeats from the future,
other hosts, reused pids), odd job records and odd results roots. Every command that reads the
store (ls, status, index --rebuild, report, run) exits without a traceback, skips and names a
bad folder, shows the other runs, and shows a run's state by one rule."""

import csv
import importlib
import io
import json
import math
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.execution.cluster import JobRecord, Submitter, Tracked
from bench.report.suite_data import load_suite_data
from bench.store.claims import HEARTBEAT, STALE_S, process_start
from bench.store.folder import MAX_FILE_BYTES
from bench.store.provenance import now
from bench.store.runs import Store

HERE = socket.gethostname()
DEAD_PID = 2**22 + 1  # above Linux's largest pid_max: no process ever has it
SUITE = "toy"
SUITE_YAML = """\
suite: toy
family: toy
seeds: [0, 1]
budget: {steps: 5}
report: {baseline: narrow, metrics: [val.mse]}
variants:
  narrow: {}
  wide: {width: 16}
"""
# sacct answering UNKNOWN for every job it is asked about (submitit's `--parsable2` format).
SACCT = """#!/bin/sh
printf 'JobID|State|NodeList\\n'
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then printf '%s|UNKNOWN|\\n' "$2"; shift; fi
  shift
done
"""


@dataclass(frozen=True)
class Template:
    """Four finished toy runs (narrow and wide, seeds 0 and 1), built once and copied per case."""

    suite: Path
    results: Path
    victim: str  # the run id of narrow seed 0, the folder each case makes odd
    others: list[str]  # the other three run ids


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, toy: None) -> Iterator[Template]:
    root = tmp_path_factory.mktemp("template")
    suite, results = root / "toy.yaml", root / "results"
    suite.write_text(SUITE_YAML)
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    victim, *others = plan(load_suite(suite))
    assert (victim.variant.name, victim.seed) == ("narrow", 0)
    yield Template(suite, results, victim.run_id, [r.run_id for r in others])


@pytest.fixture(autouse=True)
def toy_and_sacct(toy: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The toy family registered, and a `sacct` that knows no job (SLURM's UNKNOWN)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(SACCT)
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def results(template: Template, tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(template.results, copy, symlinks=True)
    return copy


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --- how a case makes a folder odd ---


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def edit(name: str, **changes: Any) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        write_json(run / name, json.loads((run / name).read_text()) | changes)
    return make


def text(name: str, content: str | bytes) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        path = run / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return make


def folder_at(name: str) -> Callable[[Path], None]:
    """A folder where the file belongs (with a file in it, so nothing removes it lightly)."""
    def make(run: Path) -> None:
        (run / name).unlink(missing_ok=True)
        (run / name).mkdir()
        (run / name / "x").write_text("x")
    return make


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def curve_cell(column: str, value: str) -> Callable[[Path], None]:
    """curve.csv with one cell of its first row replaced."""
    def make(run: Path) -> None:
        rows = list(csv.DictReader(io.StringIO((run / "curve.csv").read_text())))
        rows[0][column] = value
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        (run / "curve.csv").write_text(buf.getvalue())
    return make


def set_age(path: Path, age: float) -> None:
    when = time.time() - age
    os.utime(path, (when, when), follow_symlinks=False)


def fifo_at(name: str) -> Callable[[Path], None]:
    """A FIFO where the file belongs: opening it, or reading it, would wait for a writer."""
    def make(run: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    return make


def held(beat_age: float | None = 0.0, raw: str | None = None, **fields: Any
         ) -> Callable[[Path], None]:
    """The run marked running and claimed: by `fields` over a claim of a dead process on this
    host, or by the raw text `raw`; its heartbeat `beat_age` seconds old (none for None)."""
    def make(run: Path) -> None:
        edit("state.json", state="running", ended=None)(run)
        claim = {"host": HERE, "pid": DEAD_PID, "since": None, "token": "t", "job": None}
        (run / "claim.json").write_text(raw if raw is not None else json.dumps(claim | fields))
        (run / HEARTBEAT).unlink(missing_ok=True)  # the one its finished run left
        if beat_age is not None:
            (run / HEARTBEAT).touch()
            set_age(run / HEARTBEAT, beat_age)
    return make


# A claim that is live if taken for one (another host's, its heartbeat fresh): a case that
# spoils one of its fields shows the run 'interrupted' only if the claim is refused.
LIVE_ELSEWHERE = {"host": "elsewhere.example", "pid": 1, "since": None, "token": "t", "job": None}


def held_elsewhere(**fields: Any) -> Callable[[Path], None]:
    """The run held by `LIVE_ELSEWHERE` with `fields` over it."""
    return held(**(LIVE_ELSEWHERE | fields))


def then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        for step in steps:
            step(run)
    return make


def job_record(**fields: Any) -> Callable[[Path], None]:
    """The run marked running, held by nobody, with a job record of `fields` over a SLURM
    job's submitted an hour ago. A field given as a function is its value when the case is
    made (a time relative to now: the table is built long before a full run reaches it)."""
    def make(run: Path) -> None:
        given = {k: v() if callable(v) else v for k, v in fields.items()}
        edit("state.json", state="running", ended=None)(run)
        jobs = run.parent.parent / ".jobs" / run.parent.name
        jobs.mkdir(parents=True, exist_ok=True)
        record = {"executor": "slurm", "job_id": "4242", "stdout": str(jobs / "4242" / "o"),
                  "stderr": str(jobs / "4242" / "e"), "host": HERE, "pid": None, "since": None,
                  "submitted": _iso(time.time() - 3600)}
        write_json(jobs / f"{run.name}.json", record | given)
    return make


def job_record_text(content: str) -> Callable[[Path], None]:
    def make(run: Path) -> None:
        edit("state.json", state="running", ended=None)(run)
        jobs = run.parent.parent / ".jobs" / run.parent.name
        jobs.mkdir(parents=True, exist_ok=True)
        (jobs / f"{run.name}.json").write_text(content)
    return make


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def sibling(make_folder: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Another folder beside the victim, made by `make_folder(suite folder)`: the bad one."""
    return lambda run: make_folder(run.parent)


def non_utf8_folder(suite_dir: Path) -> Path:
    name = os.fsencode(suite_dir) + b"/run-\xff"
    os.mkdir(name)
    return Path(os.fsdecode(name))


def empty_folder(suite_dir: Path) -> Path:
    (suite_dir / "0000empty").mkdir()
    return suite_dir / "0000empty"


def file_as_run(suite_dir: Path) -> Path:
    (suite_dir / "0000file").write_text("not a run")
    return suite_dir / "0000file"


@dataclass(frozen=True)
class Case:
    """One odd folder. `skipped`: the bad folder is skipped with a warning naming it and this;
    else the run is shown by every command (ls, status, the report's rows) as `state`.
    `status`: what `bench status` shows where it differs (it reads the folder's state.json
    only). `run`: also `bench run` of the suite; `report`: also `bench report`."""

    id: str
    make: Callable[[Path], Path | None]
    skipped: str | None = None
    state: str = "finished"
    status: str | None = None
    run: bool = False
    report: bool = False


HUGE = 2**70
DIGITS_401 = "9" * 401
DIGITS_5000 = "9" * 5000
JUNK = bytes(range(256)) * 4

CASES = [
    # claim.json: a claim that is not what a claimant writes is nobody's claim
    Case("claim-pid-object", held_elsewhere(pid={"a": 1}), state="interrupted", run=True,
         report=True),
    Case("claim-pid-list", held_elsewhere(pid=[1]), state="interrupted"),
    Case("claim-pid-2**70", held_elsewhere(pid=HUGE), state="interrupted", run=True),
    Case("claim-pid-negative", held_elsewhere(pid=-1), state="interrupted"),
    Case("claim-pid-zero", held_elsewhere(pid=0), state="interrupted"),
    Case("claim-pid-true", held_elsewhere(pid=True), state="interrupted"),
    Case("claim-pid-text-self", held_elsewhere(pid="self"), state="interrupted"),
    Case("claim-host-number", held_elsewhere(host=5), state="interrupted"),
    Case("claim-token-null", held_elsewhere(token=None), state="interrupted"),
    Case("claim-since-object", held_elsewhere(since={"t": 1}), state="interrupted"),
    Case("claim-job-list", held_elsewhere(job=["77"]), state="interrupted"),
    Case("claim-host-lone-surrogate", held(raw='{"host": "\\ud800", "pid": 1, "since": null, '
                                           '"token": "t", "job": null}'), state="interrupted"),
    Case("claim-a-list", held(raw="[1, 2]"), state="interrupted"),
    Case("claim-empty", held(raw=""), state="interrupted"),
    Case("claim-binary", then(held(), text("claim.json", JUNK)), state="interrupted"),
    Case("claim-deep", held(raw=deep(100_000)), state="interrupted", run=True),
    Case("claim-huge-file", held(raw=json.dumps(LIVE_ELSEWHERE) + " " * 70_000),
         state="interrupted"),
    Case("claim-a-folder", then(held(), folder_at("claim.json")), state="interrupted"),
    # state.json
    Case("state-seed-2**70", edit("state.json", seed=HUGE),
         "state.json: field 'seed': expected a whole number of 64 bits", run=True, report=True),
    Case("state-seed-true", edit("state.json", seed=True), "state.json: field 'seed'",
         run=True),
    Case("state-seed-float", edit("state.json", seed=0.5), "state.json: field 'seed'"),
    Case("state-seed-5000-digits", text("state.json", '{"seed": ' + DIGITS_5000 + "}"),
         "state.json: Exceeds the limit"),
    Case("state-unknown-state", edit("state.json", state="banana"),
         "state.json: field 'state': expected one of running, finished, failed, pruned"),
    Case("state-variant-object", edit("state.json", variant={"a": 1}),
         "state.json: field 'variant'"),
    Case("state-variant-lone-surrogate",
         text("state.json", '{"variant": "\\udcff", "seed": 0, "state": "finished"}'),
         "state.json: text that is not UTF-8"),
    Case("state-reason-number", edit("state.json", reason=3), "state.json: field 'reason'"),
    Case("state-started-list", edit("state.json", started=[1]), "state.json: field 'started'"),
    Case("state-a-list", text("state.json", "[]"), "state.json: expected a JSON dict"),
    Case("state-empty", text("state.json", ""), "state.json: Expecting value", run=True),
    Case("state-binary", text("state.json", JUNK), "state.json: 'utf-8' codec"),
    Case("state-deep", text("state.json", deep(100_000)),
         "state.json: nested deeper than 100 levels", run=True),
    Case("state-a-folder", folder_at("state.json"), "state.json: a directory, not a regular file"),
    Case("state-a-fifo", fifo_at("state.json"), "state.json: a FIFO, not a regular file",
         run=True),
    # config.json
    Case("config-deep-100000", text("config.json", deep(100_000)),
         "config.json: nested deeper than 100 levels", report=True),
    Case("config-deep-150", text("config.json", '{"a": ' + deep(150) + "}"),
         "config.json: nested deeper than 100 levels"),
    Case("config-a-list", text("config.json", "[1]"), "config.json: expected a JSON dict"),
    Case("config-missing", lambda run: (run / "config.json").unlink(),
         "config.json: missing"),
    Case("config-a-fifo", fifo_at("config.json"), "config.json: a FIFO, not a regular file",
         report=True),
    Case("config-a-folder", folder_at("config.json"),
         "config.json: a directory, not a regular file"),
    Case("config-binary", text("config.json", JUNK), "config.json: 'utf-8' codec"),
    Case("config-nan-and-huge-values", edit("config.json", lr=float("nan"), big=HUGE)),
    Case("config-seed-2**70-without-state",
         then(edit("config.json", seed=HUGE), lambda run: (run / "state.json").unlink()),
         "config.json: field 'seed'", status="pending"),
    # provenance.json
    Case("provenance-inputs-a-list", edit("provenance.json", inputs=[1]),
         "provenance.json: field 'inputs'", run=True),
    Case("provenance-inputs-entry-numbers", edit("provenance.json", inputs={"d": {"path": 1}}),
         "provenance.json: field 'inputs'"),
    Case("provenance-packages-a-list", edit("provenance.json", packages=["torch"]),
         "provenance.json: field 'packages'"),
    Case("provenance-started-object", edit("provenance.json", started={"t": 1}),
         "provenance.json: field 'started'"),
    Case("provenance-deep", text("provenance.json", deep(5_000)),
         "provenance.json: nested deeper than 100 levels"),
    Case("provenance-binary", text("provenance.json", JUNK), "provenance.json: 'utf-8' codec"),
    Case("provenance-a-folder", folder_at("provenance.json"),
         "provenance.json: a directory, not a regular file"),
    # metrics.json: NaN and infinities are recorded values; numbers past a double are not
    Case("metrics-nan", edit("metrics.json", **{"val.mse": float("nan")}), run=True,
         report=True),
    Case("metrics-infinite", edit("metrics.json", **{"val.mse": float("inf")})),
    Case("metrics-401-digits", edit("metrics.json", **{"val.mse": 10**400}),
         "metrics.json: 'val.mse': expected a number within a double's range", report=True),
    Case("metrics-5000-digits", text("metrics.json", '{"val.mse": ' + DIGITS_5000 + "}"),
         "metrics.json: Exceeds the limit"),
    Case("metrics-true", edit("metrics.json", **{"val.mse": True}), "metrics.json: 'val.mse'"),
    Case("metrics-text", edit("metrics.json", **{"val.mse": "0.5"}), "metrics.json: 'val.mse'"),
    Case("metrics-a-list", text("metrics.json", "[0.5]"), "metrics.json: expected a JSON dict"),
    Case("metrics-empty", text("metrics.json", ""), "metrics.json: Expecting value"),
    Case("metrics-past-the-size-bound",
         lambda run: os.truncate(run / "metrics.json", MAX_FILE_BYTES + 1),  # sparse: no disk
         "metrics.json: larger than 256 MiB"),
    Case("metrics-a-fifo", fifo_at("metrics.json"), "metrics.json: a FIFO, not a regular file"),
    Case("metrics-a-folder", folder_at("metrics.json"),
         "metrics.json: a directory, not a regular file"),
    Case("metrics-deep", text("metrics.json", '{"a": ' + deep(2_000) + "}"),
         "metrics.json: nested deeper than 100 levels"),
    # points.json
    Case("points-nan-and-infinity",
         text("points.json", '{"pr:x": {"x": [0, 0.5, Infinity], "y": [1, NaN, 0]}}')),
    Case("points-401-digits", text("points.json", '{"pr:x": {"x": [' + DIGITS_401 + '], '
                                                  '"y": [1]}}'),
         "points.json: curve 'pr:x': expected numbers within a double's range"),
    Case("points-text", text("points.json", '{"pr:x": {"x": ["a"], "y": [1]}}'),
         "points.json: curve 'pr:x'"),
    Case("points-lengths-differ", text("points.json", '{"pr:x": {"x": [1, 2], "y": [1]}}'),
         "points.json: curve 'pr:x': expected x and y lists of one length"),
    Case("points-deep", text("points.json", '{"pr:x": ' + deep(500) + "}"),
         "points.json: nested deeper than 100 levels"),
    Case("points-a-folder", folder_at("points.json"),
         "points.json: a directory, not a regular file"),
    # curve.csv
    Case("curve-step-2**70", curve_cell("step", str(HUGE)),
         "curve.csv:2: column 'step': expected a whole number of 64 bits", report=True),
    Case("curve-step-negative", curve_cell("step", "-1"), "curve.csv:2: column 'step'"),
    Case("curve-step-fraction", curve_cell("step", "1.5"), "curve.csv:2: column 'step'"),
    Case("curve-step-5000-digits", curve_cell("step", DIGITS_5000),
         "curve.csv:2: column 'step'"),
    Case("curve-flops-401-digits", curve_cell("flops", DIGITS_401),
         "curve.csv:2: column 'flops': expected a number"),
    Case("curve-loss-401-digits", curve_cell("loss", DIGITS_401), "curve.csv:2: column 'loss'"),
    Case("curve-loss-nan", curve_cell("loss", "nan")),
    Case("curve-more-cells-than-columns",
         text("curve.csv", "step,flops,tokens,loss\n1,2,3,4,5,6\n"),
         "curve.csv:2: more cells than the header names"),
    Case("curve-binary", text("curve.csv", JUNK), "curve.csv:"),
    Case("curve-a-fifo", fifo_at("curve.csv"), "curve.csv: a FIFO, not a regular file"),
    Case("curve-a-folder", folder_at("curve.csv"), "curve.csv: a directory, not a regular file"),
    # liveness: who holds a running run
    Case("since-null-process-gone", held(), state="interrupted", run=True, report=True),
    Case("since-null-pid-used-heartbeat-stale", held(pid=os.getpid(), beat_age=STALE_S + 60),
         state="interrupted", run=True),
    Case("since-null-pid-used-heartbeat-fresh", held(pid=os.getpid()), state="running",
         run=True),
    Case("claim-a-fifo", then(held(pid=os.getpid()), fifo_at("claim.json")),
         state="interrupted", run=True),
    Case("pid-reused-by-another-process", held(pid=os.getpid(), since="1"),
         state="interrupted"),
    Case("foreign-host-heartbeat-fresh", held(host="elsewhere.example", pid=1, since="5"),
         state="running", run=True),
    Case("foreign-host-heartbeat-stale",
         held(host="elsewhere.example", pid=1, beat_age=STALE_S + 60), state="interrupted"),
    Case("foreign-host-heartbeat-a-day-ahead",
         held(host="elsewhere.example", pid=1, beat_age=-86_400), state="interrupted", run=True),
    Case("foreign-host-heartbeat-a-minute-ahead",
         held(host="elsewhere.example", pid=1, beat_age=-60), state="running"),
    Case("foreign-host-no-heartbeat", held(host="elsewhere.example", pid=1, beat_age=None),
         state="interrupted"),
    Case("foreign-host-heartbeat-a-link-loop",
         then(held(host="elsewhere.example", pid=1, beat_age=None),
              lambda run: (run / HEARTBEAT).symlink_to(HEARTBEAT),
              lambda run: set_age(run / HEARTBEAT, STALE_S + 60)), state="interrupted"),
    # job records in results/.jobs/<suite>/
    Case("job-record-garbage", job_record_text("{not json"), state="interrupted"),
    Case("job-record-wrong-types", job_record(executor="banana", stdout=5, job_id=["1"]),
         state="interrupted"),
    Case("job-record-a-list", job_record_text("[1, 2]"), state="interrupted"),
    Case("job-record-local-since-null-process-gone",
         job_record(executor="local", job_id=str(DEAD_PID), pid=DEAD_PID),
         state="interrupted"),
    # (another machine's local job, just submitted: 'starting' if the record were taken)
    Case("job-record-local-pid-2**70",
         job_record(executor="local", pid=HUGE, host="elsewhere.example", submitted=now),
         state="interrupted"),
    Case("job-record-slurm-unknown-an-hour-after-submission", job_record(),
         state="interrupted"),
    Case("job-record-slurm-unknown-just-submitted", job_record(submitted=now),
         state="queued"),
    Case("job-record-slurm-submitted-in-a-year",
         job_record(submitted=lambda: _iso(time.time() + 365 * 86_400)), state="interrupted"),
    # (a live local job, this process: 'starting' if the record were taken)
    Case("job-record-submitted-not-a-time",
         job_record(executor="local", job_id=str(os.getpid()), pid=os.getpid(),
                    since=process_start(os.getpid()), submitted="yesterday"),
         state="interrupted"),
    Case("job-record-a-folder",
         then(job_record(), lambda run: folder_at(f"{run.name}.json")(
             run.parent.parent / ".jobs" / run.parent.name)), state="interrupted"),
    # odd folders beside the run
    Case("a-folder-name-not-utf8", sibling(non_utf8_folder), "a name that is not UTF-8 text"),
    Case("an-empty-folder", sibling(empty_folder), "config.json: missing"),
    Case("a-file-among-run-folders", sibling(file_as_run)),
]


def _word(out: str, run_id: str, column: int) -> str | None:
    lines = [line for line in out.splitlines() if line.startswith(run_id)]
    return lines[0].split()[column] if lines else None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_odd_folder_is_skipped_or_shown_by_every_command(
        case: Case, template: Template, results: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    victim = results / SUITE / template.victim
    bad = case.make(victim) or victim
    others = template.others
    skipped_victim = case.skipped is not None and bad == victim
    suite, root = str(template.suite), str(results)

    code, out, err = bench(capsys, "ls", "--results", root)
    assert code == 0, err
    assert all(run in out for run in others), out
    if case.skipped is not None:  # named as a terminal can show it
        named = os.fsencode(bad.name).decode("utf-8", "backslashreplace")
        assert f"{named}: {case.skipped}" in err and "; skipped" in err, err
    if skipped_victim:
        assert victim.name not in out
    else:
        assert _word(out, victim.name, 4) == case.state, out

    code, out, err = bench(capsys, "status", suite, "--results", root)
    assert code == 0, err
    default = "unreadable" if skipped_victim and "state.json" in str(case.skipped) else (
        case.state)
    assert _word(out, victim.name, 5) == (case.status or default), out
    assert all(_word(out, run, 5) == "finished" for run in others), out

    rows = load_suite_data(results / "index.sqlite", SUITE).runs
    shown = dict(zip(rows["run_id"], rows["state"], strict=True))
    assert shown.get(victim.name) == (None if skipped_victim else case.state), shown

    code, out, err = bench(capsys, "index", "--rebuild", "--results", root)
    assert code == 0, err
    n_bad = case.skipped is not None
    assert f"from {4 - skipped_victim} run folders" in out, out
    assert (f"({int(n_bad)} skipped)" in out) == n_bad, out

    if case.report:
        code, out, err = bench(capsys, "report", suite, "--results", root, "--out",
                               str(results.parent / "reports"))
        assert code == 0, err
        assert (results.parent / "reports" / "toy.html").is_file()
    if case.run:
        code, out, err = bench(capsys, "run", suite, "--results", root, "--no-progress")
        assert code == 0, out + err
        if case.state == "interrupted" or (skipped_victim and "state.json" in case.skipped):
            assert f"({victim.name}): running on" in out  # taken over and resumed
            assert json.loads((victim / "state.json").read_text())["state"] == "finished"
        elif case.state == "running":
            assert f"({victim.name}): running in process" in out and "skipped" in out


# --- odd results roots ---


def _index_folder(results: Path) -> Path:
    (results / "index.sqlite").unlink()
    (results / "index.sqlite").mkdir()
    return results


def _index_garbage(results: Path) -> Path:
    (results / "index.sqlite").write_bytes(JUNK)
    return results


def _results_file(results: Path) -> Path:
    path = results.parent / "results.txt"
    path.write_text("a file")
    return path


def _results_below_file(results: Path) -> Path:
    return _results_file(results) / "results"


def _suite_folder_file(results: Path) -> Path:
    shutil.rmtree(results / SUITE)
    (results / SUITE).write_text("a file")
    return results


def _jobs_file(results: Path) -> Path:
    (results / ".jobs").write_text("a file")
    return results


def _index_empty(results: Path) -> Path:
    (results / "index.sqlite").write_bytes(b"")
    return results


@dataclass(frozen=True)
class RootCase:
    """An odd results root: each command's exit code, and what a failing (or warning)
    command says."""

    id: str
    make: Callable[[Path], Path]  # given the good results folder, the --results to pass
    codes: dict[str, int]  # in this order (index --rebuild last: it may mend what it finds)
    says: str = ""
    warns: tuple[str, ...] = ()  # commands that go on, warning with `says`


ROOT_CASES = [
    RootCase("results-a-file", _results_file,
             {"ls": 2, "status": 2, "index": 2, "run": 2, "report": 2}, "not a folder"),
    RootCase("results-below-a-file", _results_below_file,
             {"ls": 2, "status": 2, "index": 2, "run": 2}, "results.txt is a file"),
    RootCase("index-a-folder", _index_folder, {"ls": 2, "status": 0, "run": 2, "report": 2,
                                               "index": 2},
             "index.sqlite: a folder where the results index file belongs", ("status",)),
    RootCase("index-garbage", _index_garbage, {"ls": 2, "status": 0, "run": 2, "index": 0},
             "not a valid index", ("status",)),
    RootCase("index-empty", _index_empty, {"ls": 0, "status": 0, "run": 0, "index": 0}),
    RootCase("suite-folder-a-file", _suite_folder_file,
             {"ls": 0, "status": 0, "run": 2, "index": 0}, "toy: not a folder"),
    RootCase("jobs-folder-a-file", _jobs_file,
             {"ls": 0, "status": 0, "run": 0, "run-local": 2, "index": 0},
             ".jobs: not a folder, where bench keeps job records"),
]


@pytest.mark.parametrize("case", ROOT_CASES, ids=[c.id for c in ROOT_CASES])
def test_an_odd_results_root_is_one_clear_error_or_none(
        case: RootCase, template: Template, results: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    root = case.make(results)
    before = sorted(p.relative_to(results.parent) for p in results.parent.rglob("*"))
    suite = str(template.suite)
    argv = {"ls": ["ls"], "status": ["status", suite], "index": ["index", "--rebuild"],
            "run": ["run", suite, "--no-progress"],
            "run-local": ["run", suite, "--no-progress", "--executor", "local"],
            "report": ["report", suite, "--out", str(results.parent / "reports")]}
    for command, expected in case.codes.items():
        code, out, err = bench(capsys, *argv[command], "--results", str(root))
        assert code == expected, (command, out, err)
        if code == 2 or command in case.warns:
            assert case.says in err and str(root) in err, (command, err)
        if code == 2 and command.startswith("run"):
            assert "running on" not in out and "submitted" not in out  # one error, first
    if any(code == 2 for code in case.codes.values()) and case.codes.get("index") != 0:
        after = sorted(p.relative_to(results.parent) for p in results.parent.rglob("*"))
        assert after == before  # nothing written by the commands that failed


# --- focused ---


def test_a_nan_metric_is_listed_as_nan(results: Path, template: Template,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    edit("metrics.json", **{"val.mse": float("nan"), "val.big": float("-inf")})(
        results / SUITE / template.victim)
    code, out, _ = bench(capsys, "ls", "--results", str(results))
    line = next(line for line in out.splitlines() if line.startswith(template.victim))
    assert code == 0 and "val.mse=nan" in line and "val.big=-inf" in line
    (run,) = [r for r in Store(results).runs() if r["run_id"] == template.victim]
    assert math.isnan(run["metrics"]["val.mse"]) and run["metrics"]["val.big"] == -math.inf


def test_a_reason_naming_a_file_that_is_not_utf8_is_recorded_and_listed(
        results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An error about a file whose name is not UTF-8 carries a lone surrogate (Python's
    surrogateescape); recorded as it is, it would make the folder unreadable to the index."""
    store = Store(results)
    store.begin(SUITE, "narrow", 7, "0123456789ab", {"seed": 7}, {"started": now()})
    name = os.fsdecode(b"corpus-\xff.jsonl")
    store.fail("0123456789ab", f"FileNotFoundError: {name}", now())
    code, out, err = bench(capsys, "ls", "--results", str(results))
    line = next(line for line in out.splitlines() if line.startswith("0123456789ab"))
    assert code == 0 and "failed" in line and "corpus-\\xff.jsonl" in line
    assert "skipped" not in err


def test_a_killed_rebuild_leaves_nothing_for_the_next_one(results: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """A rebuild killed mid-way leaves its temporary index and that temporary's journal; the
    next command that opens the index removes them once they are stale, not before."""
    stale = results / ".index.sqlite.a1b2c3d4.tmp"
    fresh = results / ".index.sqlite.e5f6g7h8.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"\0" * 4096)
        Path(f"{tmp}-journal").write_bytes(b"\0" * 512)
    for path in (stale, Path(f"{stale}-journal")):
        set_age(path, 3600)
    code, _, err = bench(capsys, "ls", "--results", str(results))
    assert code == 0, err
    assert not stale.exists() and not Path(f"{stale}-journal").exists()
    assert fresh.exists() and Path(f"{fresh}-journal").exists()  # its writer may still run
    set_age(fresh, 3600)
    code, _, err = bench(capsys, "index", "--rebuild", "--results", str(results))
    assert code == 0, err
    assert sorted(p.name for p in results.iterdir()) == ["index.sqlite", SUITE]


def test_a_refused_sbatch_is_one_error_and_leaves_no_submission_files(
        template: Template, results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """sbatch refusing the submission (a real `sbatch` program on PATH, and `srun` so that
    submitit picks SLURM): its message, no traceback, none of submitit's files left."""
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: "
                                 "Invalid account or account/partition combination specified'"
                                 " >&2\nexit 1\n")
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    (results / SUITE / template.victim / "state.json").unlink()  # one run to submit
    code, out, err = bench(capsys, "run", str(template.suite), "--results", str(results),
                           "--executor", "slurm", "--no-progress")
    assert code == 2, out + err
    assert ("error: --executor slurm: sbatch refused the submission: sbatch: error: Batch job "
            "submission failed: Invalid account") in err
    jobs = results / ".jobs" / SUITE
    assert [p.name for p in jobs.rglob("*")] == []  # no .pkl, no .sh, no record


def _tracked(results: Path, run_id: str, record: JobRecord) -> Submitter:
    run = next(r for r in plan(load_suite(results.parent / "toy.yaml")) if r.run_id == run_id)
    submitter = Submitter(record.executor, Store(results), SUITE, 1,
                          lambda run: None, lambda run: None,  # type: ignore[arg-type,return-value]
                          lambda run: None, lambda line: None)
    submitter.tracked = [Tracked("victim", run, record)]
    return submitter


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_the_watcher_gives_up_a_job_it_cannot_see(results: Path, template: Template,
                                                  tmp_path: Path, executor: str) -> None:
    """sacct answering UNKNOWN an hour after submission, or a local job recorded without its
    start whose process is gone, while the run has no live holder: the job has ended, the run
    is recorded failed, and the watcher stops following it."""
    shutil.copy(template.suite, results.parent / "toy.yaml")
    victim = results / SUITE / template.victim
    job = "4242" if executor == "slurm" else str(DEAD_PID)
    if executor == "slurm":  # its process, on a node, stopped beating
        held(host="node-3", pid=1, job=job, beat_age=STALE_S + 60)(victim)
    else:
        held(job=job)(victim)
    record = JobRecord(executor, job, _iso(time.time() - 3600), str(tmp_path / "o"),
                       str(tmp_path / "e"), HERE, None if executor == "slurm" else DEAD_PID)
    submitter = _tracked(results, template.victim, record)
    submitter.poll()
    (tracked,) = submitter.tracked
    assert tracked.done and tracked.failure is not None and "without recording" in tracked.failure
    state = json.loads((victim / "state.json").read_text())
    assert state["state"] == "failed" and state["reason"] == tracked.failure


def test_a_job_seen_by_nobody_is_followed_while_its_run_is_held(results: Path,
                                                                template: Template,
                                                                tmp_path: Path) -> None:
    """UNKNOWN is no end while the run's holder beats: the run is shown running."""
    shutil.copy(template.suite, results.parent / "toy.yaml")
    victim = results / SUITE / template.victim
    held(host="node-7", pid=1, job="4243")(victim)
    record = JobRecord("slurm", "4243", _iso(time.time() - 3600), str(tmp_path / "o"),
                       str(tmp_path / "e"), HERE)
    submitter = _tracked(results, template.victim, record)
    said: list[str] = []
    submitter.say = said.append
    submitter.poll()
    assert not submitter.tracked[0].done
    assert said == ["victim [job 4243]: running in process 1 on host node-7 (job 4243)"]


def test_the_runs_a_command_shows_ask_sacct_once_and_only_where_needed(
        results: Path, template: Template, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """ls, status and the report's rows ask SLURM about the jobs of every run they show in one
    `sacct` call; a run whose live holder tells its state asks nothing."""
    calls = tmp_path / "sacct.calls"
    (tmp_path / "bin" / "sacct").write_text(
        SACCT.replace("#!/bin/sh\n", f"#!/bin/sh\necho call >> {calls}\n", 1))
    runs = [template.victim, *template.others]
    for i, run_id in enumerate(runs):
        job_record(job_id=str(4242 + i))(results / SUITE / run_id)

    def sacct_calls() -> int:
        n = len(calls.read_text().splitlines()) if calls.exists() else 0
        calls.unlink(missing_ok=True)
        return n

    _, ls_out, _ = bench(capsys, "ls", "--results", str(results))
    assert sacct_calls() == 1 and [_word(ls_out, r, 4) for r in runs] == ["interrupted"] * 4
    _, status_out, _ = bench(capsys, "status", str(template.suite), "--results", str(results))
    assert sacct_calls() == 1 and "4 interrupted" in status_out
    load_suite_data(results / "index.sqlite", SUITE, required=False)
    assert sacct_calls() == 1
    for run_id in runs:
        held_elsewhere()(results / SUITE / run_id)
    _, ls_out, _ = bench(capsys, "ls", "--results", str(results))
    assert sacct_calls() == 0 and [_word(ls_out, r, 4) for r in runs] == ["running"] * 4


def test_a_lock_folder_fails_its_run_at_once_and_the_suite_goes_on(
        template: Template, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = results / SUITE / template.victim
    held()(victim)
    folder_at(".lock")(victim)
    set_age(victim / ".lock", 3600)  # old enough to be taken for a killed process's lock
    code, out, err = bench(capsys, "run", str(template.suite), "--results", str(results),
                           "--no-progress")
    assert code == 1
    assert f"{victim / '.lock'}" in err and "a folder where the run's lock file belongs" in err
    assert out.count("finished earlier, skipped") == 3


def test_a_results_folder_that_cannot_be_written(template: Template,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only: ls and status read what is there, index --rebuild and run are one clear
    error each. (Run as an unprivileged user: root writes anywhere.)"""
    base = _world_readable_tmp()
    results = base / "results"
    (base / "data").mkdir(mode=0o777)
    (base / "data").chmod(0o777)
    monkeypatch.setenv("BENCH_DATA", str(base / "data"))  # the digest cache's home
    shutil.copytree(template.results, results)
    Store(results).sync()  # the index is up to date with the folders
    for path in [results, *results.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    suite = base / "toy.yaml"
    shutil.copy(template.suite, suite)
    try:
        outcome = _unprivileged(lambda: [
            _quiet_main(["ls", "--results", str(results)]),
            _quiet_main(["status", str(suite), "--results", str(results)]),
            _quiet_main(["index", "--rebuild", "--results", str(results)]),
            _quiet_main(["run", str(suite), "--results", str(results), "--no-progress"])])
    finally:
        for path in [results, *results.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(base)
    (ls, ls_out, _), (status, status_out, _), (index, _, index_err), (run, run_out, run_err) = (
        outcome)
    assert ls == 0 and template.victim in ls_out
    assert status == 0 and "4 finished" in status_out
    assert index == 2 and "index.sqlite: not rebuilt" in index_err and "Permission" in index_err
    assert run == 2 and "not writable" in run_err and "running on" not in run_out


def _world_readable_tmp() -> Path:
    """A new folder that any user can enter (pytest's own are its user's alone)."""
    path = Path(tempfile.mkdtemp(prefix="bench-ro-"))
    path.chmod(0o755)
    return path


def _quiet_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = main(argv)
    finally:
        sys.stdout, sys.stderr = saved
    return code, out.getvalue(), err.getvalue()


def _unprivileged(work: Callable[[], Any]) -> Any:
    """`work()` in a forked process of user nobody when this one is root, else here."""
    if os.geteuid() != 0:
        return work()
    import pickle

    # What the commands import lazily is loaded before the fork: the interpreter's own files
    # may not be readable by the unprivileged user.
    for module in ("bench.execution.runner", "bench.data.demo_text", "bench.training.distributed"):
        importlib.import_module(module)

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, work, send the outcome back
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            result: Any = ("ok", work())
        except BaseException as err:  # sent to the parent, which fails the test
            result = ("error", "".join(traceback.format_exception(err)))
        with os.fdopen(write, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        kind, value = pickle.load(f)
    os.waitpid(pid, 0)
    assert kind == "ok", value
    return value


def test_status_ls_and_the_report_agree_with_the_watcher(results: Path, template: Template,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """One rule for every command: a run recorded running whose holder is gone, with a live
    job of this machine that will take it, is 'starting' in ls, status, the report's rows and
    what the watcher of `bench run` says."""
    shutil.copy(template.suite, results.parent / "toy.yaml")
    victim = results / SUITE / template.victim
    held()(victim)
    pid = os.getpid()  # this process stands for the job's: alive, and only looked at
    record = JobRecord("local", str(pid), now(), "o", "e", HERE, pid, process_start(pid))
    (results / ".jobs" / SUITE).mkdir(parents=True)
    write_json(results / ".jobs" / SUITE / f"{victim.name}.json", asdict(record))
    _, ls_out, _ = bench(capsys, "ls", "--results", str(results))
    _, status_out, _ = bench(capsys, "status", str(template.suite), "--results", str(results))
    rows = load_suite_data(results / "index.sqlite", SUITE).runs
    said: list[str] = []
    submitter = _tracked(results, template.victim, record)
    submitter.say = said.append
    submitter.poll()
    assert _word(ls_out, victim.name, 4) == _word(status_out, victim.name, 5) == "starting"
    assert rows.loc[rows["run_id"] == victim.name, "state"].item() == "starting"
    assert said == [f"victim [job {pid}]: starting as job {pid}"]


def test_an_index_row_holds_no_odd_holder(results: Path, template: Template) -> None:
    victim = results / SUITE / template.victim
    held(pid={"a": 1})(victim)
    Store(results).sync()
    with sqlite3.connect(results / "index.sqlite") as con:
        row = con.execute("SELECT state, owner_pid, owner_host FROM runs WHERE run_id = ?",
                          (victim.name,)).fetchone()
    assert row == ("running", None, None)
