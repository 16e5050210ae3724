"""Claims on runs: one process per run, a dead claimant's run taken over, only the holder
records how a run ends, and the run folder's state.json mirrors the index."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_suite import write_suite

from bench.errors import ClaimRefused
from bench.store import Owner, Store

SUITE, RUN = "suite", "run0"
HERE = socket.gethostname()


def begin(store: Store, run_id: str = RUN) -> Path:
    return store.begin(SUITE, "v", 0, run_id, {"lr": 1}, {"started": "2025-01-01T00:00:00"})


def finish(store: Store, run_id: str = RUN) -> None:
    store.finish(run_id, {"acc": 0.5}, [], {"ended": "2025-01-01T01:00:00"}, {})


def state_file(store: Store, run_id: str = RUN) -> dict:
    return json.loads((store.run_dir(SUITE, run_id) / "state.json").read_text())


def index_row(store: Store, run_id: str = RUN) -> dict:
    with sqlite3.connect(store.index_path) as con:
        con.row_factory = sqlite3.Row
        return dict(con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())


def test_a_live_claim_is_respected_and_only_its_holder_records(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)  # two claimants, both alive in this process
    begin(a)
    with pytest.raises(ClaimRefused) as refused:
        begin(b)
    assert refused.value.state == "running"
    assert refused.value.status == f"running in process {os.getpid()} on host {HERE}"
    assert b.claim_refusal(RUN).status == refused.value.status
    for write in (lambda: b.fail(RUN, "boom", "2025-01-01T01:00:00"), lambda: finish(b),
                  lambda: b.release(RUN)):
        with pytest.raises(ClaimRefused):
            write()
    row = index_row(a)
    assert (row["state"], row["reason"], row["owner_token"]) == ("running", None, a.owner.token)

    finish(a)
    assert a.state(RUN) == "finished"
    for store in (a, b):  # a finished run is never claimed again, not even by its finisher
        with pytest.raises(ClaimRefused, match="finished in process"):
            begin(store)
    with pytest.raises(ClaimRefused):
        a.fail(RUN, "late", "2025-01-01T02:00:00")
    assert a.state(RUN) == "finished" and a.final_metrics(RUN) == {"acc": 0.5}


def test_the_claim_of_a_dead_process_is_taken_over(tmp_path):
    claim = ("import sys; from pathlib import Path; from bench.store import Store; "
             "Store(Path(sys.argv[1])).begin('suite', 'v', 0, 'run0', {}, {})")
    subprocess.run([sys.executable, "-c", claim, str(tmp_path)], check=True)
    store = Store(tmp_path)
    dead = state_file(store)["owner"]
    assert dead["pid"] != os.getpid() and index_row(store)["owner_pid"] == dead["pid"]

    assert store.claim_refusal(RUN) is None
    begin(store)
    assert state_file(store)["owner"] == {"host": HERE, "pid": os.getpid(),
                                          "since": store.owner.since, "token": store.owner.token}
    finish(store)
    assert store.state(RUN) == "finished"


def test_a_reused_pid_is_not_the_claimant(tmp_path):
    me = Owner.this_process()
    earlier = Owner(HERE, me.pid, str(int(me.since) - 1), "an earlier process with this pid")
    begin(Store(tmp_path, earlier))
    begin(Store(tmp_path))
    assert index_row(Store(tmp_path))["owner_since"] == me.since


def test_a_claim_from_another_host_is_taken_over(tmp_path):
    elsewhere = Owner("elsewhere.example", os.getpid(), Owner.this_process().since, "t")
    begin(Store(tmp_path, elsewhere))
    store = Store(tmp_path)
    begin(store)
    assert index_row(store)["owner_host"] == HERE


def test_state_json_mirrors_the_index_at_each_transition(tmp_path):
    store = Store(tmp_path)
    path = begin(store)
    assert (path / "config.json").exists()

    def mirrored() -> dict:
        row, state = index_row(store), state_file(store)
        owner = {k: row[f"owner_{k}"] for k in ("host", "pid", "since", "token")}
        assert state == {k: row[k] for k in ("run_id", "suite", "variant", "seed", "state",
                                             "reason", "started", "ended")} | {"owner": owner}
        return state

    assert mirrored()["state"] == "running"
    store.fail(RUN, "RuntimeError: boom", "2025-01-01T00:30:00")
    assert mirrored()["reason"] == "RuntimeError: boom"
    begin(store)  # a failed run is tried again
    assert mirrored()["state"] == "running"
    finish(store)
    assert mirrored()["ended"] == "2025-01-01T01:00:00"


def test_release_lets_the_next_claimant_in_at_once(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)
    begin(a)
    a.release(RUN)
    assert a.state(RUN) == "running" and b.claim_refusal(RUN) is None
    begin(b)
    with pytest.raises(ClaimRefused):
        finish(a)


def test_an_index_from_before_claims_gains_the_owner_columns(tmp_path):
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, suite TEXT, variant TEXT, "
                    "seed INTEGER, state TEXT, reason TEXT, path TEXT, config TEXT, "
                    "provenance TEXT, started TEXT, ended TEXT)")
        con.execute("INSERT INTO runs VALUES ('run0','suite','v',0,'running',NULL,'p','{}',"
                    "'{}',NULL,NULL)")
    store = Store(tmp_path)
    begin(store)  # an ownerless 'running' run: interrupted before claims existed
    assert index_row(store)["owner_token"] == store.owner.token


def _bench_run(suite: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, BENCH_DATA=str(results.parent / "cache"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(suite), "--results",
                             str(results), "--only", "softmax", "--no-progress", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_bench_runs_train_a_run_once(tmp_path):
    # A trains for minutes (a wall-clock budget); B starts while A holds the run.
    suite, results = write_suite(tmp_path, "{seconds: 600}"), tmp_path / "results"
    a = _bench_run(suite, results)
    try:
        _wait_for(lambda: list(results.glob("store-e2e/*/checkpoints/pretrain.pt")),
                  "a checkpoint of the first process")
        b = _bench_run(suite, results)
        out, err = b.communicate(timeout=120)
        assert b.returncode == 0, err
        assert f"running in process {a.pid} on host {HERE}, skipped" in out
        assert "running on" not in out and "Traceback" not in err
        (run_dir,) = results.glob("store-e2e/*")
        log = (run_dir / "run.log").read_text()
        assert log.count(f"run {run_dir.name}: suite") == 1  # B never opened the log
        assert json.loads((run_dir / "state.json").read_text())["owner"]["pid"] == a.pid

        a.send_signal(signal.SIGKILL)
        a.wait()
        store = Store(results)
        assert store.state(run_dir.name) == "running" and store.claim_refusal(run_dir.name) is None
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()


@pytest.mark.slow
def test_bench_run_wait_waits_for_the_holder(tmp_path):
    # The holder is a real process that claims the run, finishes it a few seconds later, exits.
    suite, results = write_suite(tmp_path), tmp_path / "results"
    hold = f"""
import sys, time
from pathlib import Path
from bench.plan import plan
from bench.store import Store
from bench.suite import load_suite
suite = load_suite(Path({str(suite)!r}))
(r,) = plan(suite, ["softmax"], None)
store = Store(Path({str(results)!r}))
store.begin(r.suite, r.variant.name, r.seed, r.run_id, r.resolved, {{}})
print("claimed", flush=True)
time.sleep(float(sys.argv[1]))
store.finish(r.run_id, {{"acc": 1.0}}, [], {{}}, {{}})
"""
    holder = subprocess.Popen([sys.executable, "-c", hold, "8"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "claimed\n"
    waiter = _bench_run(suite, results, "--wait")
    out, err = waiter.communicate(timeout=180)
    assert holder.wait() == 0
    assert waiter.returncode == 0, err
    assert f"running in process {holder.pid} on host {HERE}, waiting for it" in out
    assert "finished earlier, skipped" in out and "running on" not in out
