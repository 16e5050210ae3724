"""Claims on runs: one process per run, a dead claimant's run taken over (on this host by its
process, elsewhere by its heartbeat, at once by a requeued incarnation of its job), only the
holder records how a run ends, the folder is the record and the index follows it."""

import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.store_suite import write_suite

import bench.store.claims
from bench.errors import ClaimRefused
from bench.store.claims import CLAIM, HEARTBEAT, LOCK, Owner, heartbeat, read_claim
from bench.store.runs import Store

SUITE, RUN = "suite", "run0"
HERE = socket.gethostname()


def begin(store: Store, run_id: str = RUN) -> Path:
    return store.begin(SUITE, "v", 0, run_id, {"lr": 1}, {"started": "2025-01-01T00:00:00"})


def finish(store: Store, run_id: str = RUN) -> None:
    store.finish(run_id, {"acc": 0.5}, [], {"ended": "2025-01-01T01:00:00"})


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
    assert a.state(RUN) == "finished" and read_claim(a.run_dir(SUITE, RUN)) is None
    for store in (a, b):  # a finished run is never claimed again, not even by its finisher
        with pytest.raises(ClaimRefused, match="is finished"):
            begin(store)
    with pytest.raises(ClaimRefused):
        a.fail(RUN, "late", "2025-01-01T02:00:00")
    assert a.state(RUN) == "finished" and a.final_metrics(RUN) == {"acc": 0.5}
    assert b.final_metrics(RUN) == {"acc": 0.5}  # read from the folder by any store


def test_the_claim_of_a_dead_process_is_taken_over(tmp_path):
    claim = ("import sys; from pathlib import Path; from bench.store.runs import Store; "
             "Store(Path(sys.argv[1])).begin('suite', 'v', 0, 'run0', {}, {})")
    subprocess.run([sys.executable, "-c", claim, str(tmp_path)], check=True)
    store = Store(tmp_path)
    dead = read_claim(store.run_dir(SUITE, RUN))
    assert dead.pid != os.getpid() and index_row(store)["owner_pid"] == dead.pid

    assert store.claim_refusal(RUN) is None
    begin(store)
    assert read_claim(store.run_dir(SUITE, RUN)) == store.owner
    finish(store)
    assert store.state(RUN) == "finished"


def test_a_reused_pid_is_not_the_claimant(tmp_path):
    me = Owner.this_process()
    earlier = Owner(HERE, me.pid, str(int(me.since) - 1), "an earlier process with this pid")
    begin(Store(tmp_path, earlier))
    begin(Store(tmp_path))
    assert index_row(Store(tmp_path))["owner_since"] == me.since


def test_a_claim_from_another_host_lives_while_it_beats(tmp_path):
    elsewhere = Owner("elsewhere.example", os.getpid(), Owner.this_process().since, "t")
    folder = begin(Store(tmp_path, elsewhere))
    store = Store(tmp_path)
    with pytest.raises(ClaimRefused, match=r"running in process .* on host elsewhere\.example"):
        begin(store)
    old = time.time() - bench.store.claims.STALE_S - 1
    os.utime(folder / HEARTBEAT, (old, old))  # its node died: no beat for ten minutes
    begin(store)
    assert index_row(store)["owner_host"] == HERE


def test_a_requeued_job_takes_its_earlier_claim_at_once(tmp_path):
    since = Owner.this_process().since
    first = Owner("node-1", 1234, since, "first", job="77_3")
    begin(Store(tmp_path, first))  # beating: alive as far as other jobs can tell
    with pytest.raises(ClaimRefused, match=r"\(job 77_3\)"):
        begin(Store(tmp_path, Owner("node-2", 99, since, "other job", job="78_0")))
    again = Store(tmp_path, Owner("node-2", 4321, since, "requeued", job="77_3"))
    folder = begin(again)
    assert read_claim(folder) == again.owner
    assert not again.index_path.exists()  # a store in a job writes its folders only
    reader = Store(tmp_path)
    reader.sync()  # a reader imports the folders
    assert index_row(reader)["owner_job"] == "77_3"


def test_the_index_follows_the_folder_at_each_transition(tmp_path):
    store = Store(tmp_path)
    path = begin(store)
    assert (path / "config.json").exists()

    def mirrored() -> dict:
        row, state, holder = index_row(store), state_file(store), read_claim(path)
        assert state == {k: row[k] for k in ("run_id", "suite", "variant", "seed", "state",
                                             "reason", "started", "ended")}
        assert row["owner_token"] == (holder.token if holder else None)
        return state

    assert mirrored()["state"] == "running"
    store.fail(RUN, "RuntimeError: boom", "2025-01-01T00:30:00")
    assert mirrored()["reason"] == "RuntimeError: boom" and not (path / CLAIM).exists()
    begin(store)  # a failed run is tried again
    assert mirrored()["state"] == "running"
    finish(store)
    assert mirrored()["ended"] == "2025-01-01T01:00:00"


def test_a_job_store_writes_its_folder_only(tmp_path):
    job = Store(tmp_path, indexes=False)
    begin(job)
    finish(job)
    assert not job.index_path.exists() and job.state(RUN) == "finished"
    reader = Store(tmp_path)
    assert [(r["state"], r["metrics"]) for r in reader.runs()] == [("finished", {"acc": 0.5})]


def test_release_lets_the_next_claimant_in_at_once(tmp_path):
    a, b = Store(tmp_path), Store(tmp_path)
    begin(a)
    a.release(RUN)
    assert a.state(RUN) == "running" and b.claim_refusal(RUN) is None
    begin(b)
    with pytest.raises(ClaimRefused):
        finish(a)


def test_a_dead_jobs_run_is_reaped_only_while_that_job_holds_it(tmp_path):
    since = Owner.this_process().since
    begin(Store(tmp_path, Owner("node-1", 1, since, "t", job="5_0")))
    reaper = Store(tmp_path)
    assert not reaper.reap(RUN, "6_0", "job 6_0 ended OUT_OF_MEMORY", "t")  # another job's
    assert reaper.reap(RUN, "5_0", "job 5_0 ended OUT_OF_MEMORY", "2025-01-02T00:00:00")
    assert state_file(reaper)["reason"] == "job 5_0 ended OUT_OF_MEMORY"
    assert index_row(reaper)["state"] == "failed" and reaper.claim_refusal(RUN) is None
    assert not reaper.reap(RUN, "5_0", "again", "t")  # recorded once


def test_a_lock_left_by_a_killed_process_is_broken(tmp_path, monkeypatch):
    folder = tmp_path / SUITE / RUN
    folder.mkdir(parents=True)
    (folder / LOCK).touch()
    monkeypatch.setattr(bench.store.claims, "LOCK_WAIT_S", 0.3)
    with pytest.raises(TimeoutError, match=f"{LOCK}: held for over"):
        begin(Store(tmp_path))  # a fresh lock is waited for
    old = time.time() - bench.store.claims.LOCK_STALE_S - 1
    os.utime(folder / LOCK, (old, old))
    begin(Store(tmp_path))
    assert not (folder / LOCK).exists()


def _race(root: str, barrier, wins) -> None:
    barrier.wait()
    try:
        Store(Path(root), indexes=False).begin(SUITE, "v", 0, RUN, {}, {})
        wins.put(os.getpid())
    except ClaimRefused:
        pass
    time.sleep(1.0)  # stay alive, so the claim stays live while the others try


def test_processes_racing_for_a_run_leave_one_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, wins = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, wins)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    winners = []
    while not wins.empty():
        winners.append(wins.get())
    assert len(winners) == 1
    assert read_claim(tmp_path / SUITE / RUN).pid == winners[0]


def test_a_heartbeat_beats_while_its_body_runs(tmp_path):
    (tmp_path / HEARTBEAT).touch()
    old = time.time() - 100
    os.utime(tmp_path / HEARTBEAT, (old, old))
    with heartbeat(tmp_path, every_s=0.05):
        time.sleep(0.3)
    assert bench.store.claims.heartbeat_age(tmp_path) < 5


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
        assert read_claim(run_dir).pid == a.pid

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
from bench.config.plan import plan
from bench.store.runs import Store
from bench.config.suite import load_suite
suite = load_suite(Path({str(suite)!r}))
(r,) = plan(suite, ["softmax"], None)
store = Store(Path({str(results)!r}))
store.begin(r.suite, r.variant.name, r.seed, r.run_id, r.resolved, {{}})
print("claimed", flush=True)
time.sleep(float(sys.argv[1]))
store.finish(r.run_id, {{"acc": 1.0}}, [], {{}})
"""
    holder = subprocess.Popen([sys.executable, "-c", hold, "8"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "claimed\n"
    waiter = _bench_run(suite, results, "--wait")
    out, err = waiter.communicate(timeout=180)
    assert holder.wait() == 0
    assert waiter.returncode == 0, err
    assert f"running in process {holder.pid} on host {HERE}, waiting for it" in out
    assert "finished earlier, skipped" in out and "running on" not in out


def test_an_ended_child_not_yet_reaped_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    since = bench.store.claims.process_start(child.pid)
    assert since is not None
    _wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0]
              == "Z", "the child to end")
    assert bench.store.claims.process_running(child.pid, since) is False  # a zombie, until waited
    child.wait()
