"""Runs as jobs of a real SLURM cluster (Debian's slurmctld, slurmd and slurmdbd on this machine,
`support.slurm_cluster`): the commands users' clusters answer (sbatch, squeue, sacct) and the
same runs as inline, untimed metric for metric."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support.slurm_cluster import Cluster, slurm_cluster
from support.store_suite import write_suite
from test_cluster import (
    BUDGET,
    bench,
    checkpointed_holder,
    finish,
    inline,
    metrics_by_run,
    resumed,
    run_on_two_tasks,
    wait_for,
)

from bench.execution.cluster import POLL_S
from bench.store.runs import Store

__all__ = ["inline"]  # the inline runs, a fixture of this module too


@pytest.fixture(scope="module")
def slurm() -> Iterator[Cluster]:
    """The cluster, its SLURM_CONF in the environment the bench commands inherit."""
    with slurm_cluster() as cluster, pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster


def sacct(cluster: Cluster, job: str) -> list[dict[str, str]]:
    """The accounting records of a job (an array: each task), as sacct prints them."""
    fields = ["JobID", "State", "Start", "End"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", ",".join(fields)],
                         env=cluster.env, capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]


def most_at_once(tasks: list[dict[str, str]]) -> int:
    """The most tasks running at one moment, from their start and end times."""
    events = sorted([(datetime.fromisoformat(t["Start"]), 1) for t in tasks]
                    + [(datetime.fromisoformat(t["End"]), -1) for t in tasks])
    running = peak = 0
    for _, step in events:  # at one second, ends come before starts: [start, end)
        running += step
        peak = max(peak, running)
    return peak


def job_ids(results: Path) -> set[str]:
    return {json.loads(p.read_text())["job_id"]
            for p in (results / ".jobs" / "store-e2e").glob("*.json")}


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [1, 2])
def test_an_array_runs_at_most_max_parallel_at_once_and_matches_inline(slurm, tmp_path, inline,
                                                                       parallel):
    write_suite(tmp_path, BUDGET)
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--seeds", "0", "1",
                                  "--results", "results", "--executor", "slurm",
                                  "--max-parallel", str(parallel), "--resource",
                                  "cpus_per_task=1", "--no-progress"))
    assert code == 0, out + err
    assert metrics_by_run(tmp_path / "results") == inline
    tasks = job_ids(tmp_path / "results")
    (array,) = {task.split("_")[0] for task in tasks}  # one array of four tasks
    # a job ends a moment after its run has recorded its end, and accounting hears it after
    wait_for(lambda: {r["State"] for r in sacct(slurm, array)} == {"COMPLETED"},
             "every task's end in accounting", timeout=60)
    records = sacct(slurm, array)
    assert sorted(r["JobID"] for r in records) == sorted(tasks)
    assert most_at_once(records) == parallel


@pytest.mark.slow
def test_a_request_no_node_can_take_is_refused_before_anything_is_submitted(slurm, tmp_path):
    write_suite(tmp_path, BUDGET)
    too_many = slurm.cpus + 1
    code, _, err = finish(bench(tmp_path, "run", "suite.yaml", "--results", "results",
                                "--executor", "slurm", "--resource",
                                f"cpus_per_task={too_many}", "--no-progress"))
    assert code == 2 and "Traceback" not in err
    assert (f"error: resources.cpus_per_task {too_many} (x 1 tasks a node): a node of the job "
            f"needs {too_many} CPUs; the nodes of partition 'debug' have at most {slurm.cpus} "
            "(sinfo); nothing was submitted") in err
    queued = subprocess.run(["squeue", "-h", "-o", "%i %j"], env=slurm.env, capture_output=True,
                            text=True, check=True).stdout
    assert "bench-store-e2e" not in queued and not (tmp_path / "results" / ".jobs").exists()


@pytest.mark.slow
def test_the_default_cpus_fit_the_node_and_the_run_matches_inline(slurm, tmp_path):
    write_suite(tmp_path, BUDGET)
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--only", "softmax",
                                  "--results", "results", "--executor", "slurm", "--no-progress"))
    assert code == 0, out + err
    cpus = min(slurm.cpus, 4)
    lowered = (f"variant softmax: resources.cpus_per_task: {cpus}, not the default 4: the nodes "
               f"of partition 'debug' have at most {slurm.cpus} CPUs")
    assert (lowered in out) == (slurm.cpus < 4)
    # the job's threads are its CPUs: inline on as many threads, the same numbers
    inline_env = dict(os.environ, BENCH_DATA=str(tmp_path / "cache"), OMP_NUM_THREADS=str(cpus))
    subprocess.run([sys.executable, "-m", "bench", "run", "suite.yaml", "--only", "softmax",
                    "--results", "inline", "--no-progress"], cwd=tmp_path, env=inline_env,
                   check=True, capture_output=True)
    assert metrics_by_run(tmp_path / "results") == metrics_by_run(tmp_path / "inline")


def running_job(results: Path) -> str:
    """The SLURM job of the suite's one run, once the run has written a checkpoint."""
    checkpointed_holder(results)
    (job,) = job_ids(results)
    return job


@pytest.mark.slow
def test_a_cancelled_job_is_recorded_so_and_the_next_run_resumes_it(slurm, tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--only", "softmax", "--results", "results", "--executor",
            "slurm", "--resource", "cpus_per_task=1", "--no-progress")
    proc = bench(tmp_path, *argv)
    job = running_job(tmp_path / "results")
    subprocess.run(["scancel", job], env=slurm.env, check=True)
    code, out, err = finish(proc)
    assert code == 1 and "Traceback" not in err
    assert f"failed: job {job} ended CANCELLED" in out  # SLURM's own word for it
    (run,) = Store(tmp_path / "results").runs()
    assert run["state"] == "failed" and f"job {job} ended CANCELLED" in run["reason"]
    assert sacct(slurm, job)[0]["State"].startswith("CANCELLED")
    assert resumed(tmp_path, argv) == {("softmax", 0): inline["softmax", 0]}  # by a new job


@pytest.mark.slow
def test_a_requeued_job_stops_at_once_and_its_next_start_resumes_the_run(slurm, tmp_path,
                                                                        inline):
    write_suite(tmp_path, BUDGET)
    proc = bench(tmp_path, "run", "suite.yaml", "--only", "softmax", "--results", "results",
                 "--executor", "slurm", "--resource", "cpus_per_task=1", "--no-progress")
    job = running_job(tmp_path / "results")
    subprocess.run(["scontrol", "requeue", job], env=slurm.env, check=True)  # as preemption
    code, out, err = finish(proc, timeout=600)  # SLURM holds a requeued job (cred_expire)
    assert code == 0, out + err
    assert out.count(f"[job {job}]: running in process") == 2  # the same job, started twice
    (folder,) = (tmp_path / "results").glob("store-e2e/*")
    log = (folder / "run.log").read_text()
    assert "stage pretrain: resuming at step" in log and log.count(f"run {folder.name}:") == 2
    (job_log,) = (tmp_path / "results" / ".jobs" / "store-e2e").glob(f"{job}/*_log.out")
    assert "SIGTERM: this job stops now" in job_log.read_text()
    shown = subprocess.run(["scontrol", "show", "job", job], env=slurm.env, check=True,
                           capture_output=True, text=True).stdout
    assert "Restarts=1" in shown
    assert metrics_by_run(tmp_path / "results") == {("softmax", 0): inline["softmax", 0]}
    assert len(Store(tmp_path / "results").runs()) == 1
    status = finish(bench(tmp_path, "status", "suite.yaml", "--only", "softmax", "--results",
                          "results"))[1]
    assert "  requeued 1 time (" in status, status


def inline_beside(root: Path, *argv: str) -> subprocess.Popen:
    """The suite's runs `argv` selects, run inline into `root/inline` beside the jobs: on one
    thread each, their numbers are the jobs'."""
    return bench(root, "run", "suite.yaml", *argv, "--results", "inline", "--no-progress",
                 out=subprocess.DEVNULL)


# Longer than a 1-minute slice on any machine (warned at 42 s, about 20 s of which went to
# starting here): the fastest seen trains this model at about 320 steps/s on one thread, the
# slowest at 120 (ten slices). A checkpoint only every 1,000 steps: the warned job saves where
# it stands.
TIME_LIMITED_STEPS = 24_000
TIME_LIMITED = (f"{{steps: {TIME_LIMITED_STEPS}}}", "-o", "train.checkpoint_every=1000")


@pytest.mark.slow
def test_a_run_longer_than_its_time_limit_is_warned_requeued_and_finishes(slurm, tmp_path):
    budget, *override = TIME_LIMITED
    write_suite(tmp_path, budget)
    reference = inline_beside(tmp_path, "--only", "softmax", *override)
    started = time.monotonic()
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--only", "softmax", *override,
                                  "--results", "results", "--executor", "slurm", "--resource",
                                  "cpus_per_task=1", "--resource", "timeout_min=1",
                                  "--no-progress"), timeout=1500)
    took = time.monotonic() - started
    assert code == 0, out + err
    assert reference.wait(timeout=600) == 0
    (job,) = job_ids(tmp_path / "results")
    (folder,) = (tmp_path / "results").glob("store-e2e/*")
    log = (folder / "run.log").read_text()
    warned = re.findall(r"warned by the cluster, saved a checkpoint at step (\d+)", log)
    assert warned and any(int(step) % 1000 for step in warned), log  # saved off the cadence
    assert [f"resuming at step {step}" in log for step in warned] == [True] * len(warned)
    # no step lost: every incarnation resumes where a warning saved (one warned in its last
    # steps saves the stage finished first; one warned outside training requeues at once)
    assert set(re.findall(r"resuming at step (\d+)", log)) <= set(warned), log
    assert "requeued 1 time" in out  # bench run said so while it followed the job
    incarnations = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-j", job, "-o",
                                   "State"], env=slurm.env, capture_output=True, text=True,
                                  check=True).stdout.split()
    assert "TIMEOUT" not in incarnations, incarnations  # requeued before the limit every time
    (status,) = json.loads(finish(bench(tmp_path, "status", "suite.yaml", "--only", "softmax",
                                        *override, "--results", "results", "--json"))[1])
    n = len(incarnations) - 1  # a warning outside training requeues without a saved step
    assert n >= len(warned)
    assert (status["state"], status["job"], status["step"], status["total"]) == (
        "finished", job, TIME_LIMITED_STEPS, TIME_LIMITED_STEPS), status
    assert status["detail"] == f"requeued {n} time{'s' * (n != 1)}", status
    assert metrics_by_run(tmp_path / "results") == metrics_by_run(tmp_path / "inline")
    print(f"a 1-minute limit: {n} requeues, {took:.0f} s from submission to the end")


@pytest.fixture
def capped(slurm: Cluster) -> Iterator[str]:
    """A partition whose nodes take one CPU of a job (MaxCPUsPerNode, which sinfo does not
    show): a job asking two is accepted by sbatch and pends for ever (PartitionConfig)."""
    name = "capped"
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=slurm.env, check=True,
                          capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["scontrol", "create", f"PartitionName={name}", f"Nodes={node}",
                    "MaxCPUsPerNode=1", "State=UP"], env=slurm.env, check=True)
    try:
        yield name
    finally:
        subprocess.run(["scontrol", "delete", f"PartitionName={name}"], env=slurm.env,
                       check=True)


def our_jobs(slurm: Cluster) -> list[str]:
    """The suite's jobs SLURM's queue lists as pending or running."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", "PD,R", "-n", "bench-store-e2e", "-o",
                          "%i"], env=slurm.env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_a_job_that_can_never_start_is_cancelled_with_squeues_reason(slurm, capped, tmp_path):
    write_suite(tmp_path, BUDGET)
    started = time.monotonic()
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--only", "softmax",
                                  "--results", "results", "--executor", "slurm", "--resource",
                                  f"partition={capped}", "--resource", "cpus_per_task=2",
                                  "--no-progress"), timeout=120)
    assert code == 2 and "Traceback" not in err, out + err
    assert time.monotonic() - started < 60
    (job,) = job_ids(tmp_path / "results")
    assert (f"error: job {job} can never start: squeue says PD (PartitionConfig) in partition "
            f"{capped} (MaxCPUsPerNode=1);") in err, err
    assert "it asks resources.cpus_per_task 2 x tasks_per_node 1" in err
    assert "cancelled; its runs stay pending" in err
    assert job not in our_jobs(slurm)
    assert not list((tmp_path / "results").glob("store-e2e/*"))  # never started


@pytest.mark.slow
def test_status_shows_why_jobs_wait_and_cancel_leaves_the_runs_resumable(slurm, tmp_path):
    write_suite(tmp_path, "{steps: 3000}")  # outlasts the looks below
    selection = ("--only", "softmax", "--seeds", "0", "1")
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "1", "--wrap", "sleep 600"],
                             cwd=tmp_path, env=slurm.env, capture_output=True, text=True,
                             check=True)
    try:
        argv = ("run", "suite.yaml", *selection, "--results", "results", "--executor",
                "slurm", "--resource", "cpus_per_task=1", "--no-progress")
        code, out, err = finish(bench(tmp_path, *argv, "--detach"), timeout=120)
        assert code == 0, out + err
        checkpointed_holder(tmp_path / "results")  # one runs beside the blocker, one waits
        looks = ("suite.yaml", *selection, "--results", "results")
        status = finish(bench(tmp_path, "status", *looks))[1]
        assert "PD (Resources)" in status and "running     " in status, status
        running, waiting = sorted(json.loads(finish(bench(tmp_path, "status", *looks,
                                                          "--json"))[1]),
                                  key=lambda r: r["state"] != "running")
        assert (running["state"], running["job_state"], waiting["job_state"]) == (
            "running", "RUNNING", "PENDING"), (running, waiting)
        assert running["step"] > 0 and running["total"] == 3000 and running["elapsed_s"] >= 0
        code, out, err = finish(bench(tmp_path, "cancel", *looks), timeout=180)
        assert code == 0 and "store-e2e: 2 jobs cancelled" in out, out + err
        assert our_jobs(slurm) == []
        status = finish(bench(tmp_path, "status", *looks))[1]
        assert "1 interrupted, 1 pending" in status, status
    finally:
        subprocess.run(["scancel", blocker.stdout.strip()], env=slurm.env, check=True)
    reference = inline_beside(tmp_path, *selection)
    code, out, err = finish(bench(tmp_path, *argv))
    assert code == 0, out + err
    logs = [(f / "run.log").read_text() for f in (tmp_path / "results").glob("store-e2e/*")]
    assert sum("resuming at step" in log for log in logs) == 1  # the cancelled one went on
    assert reference.wait(timeout=600) == 0
    assert metrics_by_run(tmp_path / "results") == metrics_by_run(tmp_path / "inline")


@pytest.mark.slow
def test_a_late_job_whose_run_finished_meanwhile_leaves_it_at_once(slurm, tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    blocker = subprocess.run(["sbatch", "--parsable", "-c", str(slurm.cpus), "--wrap",
                              "sleep 600"], cwd=tmp_path, env=slurm.env, capture_output=True,
                             text=True, check=True).stdout.strip()
    selection = ("suite.yaml", "--only", "softmax", "--seeds", "0", "--results", "results",
                 "--no-progress")
    try:
        code, out, err = finish(bench(tmp_path, "run", *selection, "--executor", "slurm",
                                      "--resource", "cpus_per_task=1", "--detach"))
        assert code == 0, out + err
        (job,) = job_ids(tmp_path / "results")
        code, out, err = finish(bench(tmp_path, "run", *selection))  # inline, while it waits
        assert code == 0, out + err
        assert job in our_jobs(slurm)  # still pending behind the blocker
    finally:
        subprocess.run(["scancel", blocker], env=slurm.env, check=True)
    wait_for(lambda: sacct(slurm, job)[0]["State"] == "COMPLETED", "the late job's end")
    (job_log,) = (tmp_path / "results" / ".jobs" / "store-e2e").glob(f"{job}/*_log.out")
    (folder,) = (tmp_path / "results").glob("store-e2e/*")
    assert f"run {folder.name}: finished; this job leaves it" in job_log.read_text()
    assert (folder / "run.log").read_text().count(f"run {folder.name}: suite") == 1
    assert metrics_by_run(tmp_path / "results") == {("softmax", 0): inline["softmax", 0]}


@pytest.mark.slow
def test_a_sweeps_worker_jobs_complete_its_study(slurm, tmp_path, monkeypatch, capsys):
    from test_cluster_sweep import sweep_as_jobs

    sweep_as_jobs(tmp_path, monkeypatch, capsys, workers=2, trials=3, executor="slurm")


@pytest.mark.slow
def test_two_submitters_of_one_suite_submit_each_run_once(slurm, tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--seeds", "0", "--results", "results", "--executor", "slurm",
            "--resource", "cpus_per_task=1", "--no-progress")
    a, b = bench(tmp_path, *argv), bench(tmp_path, *argv)
    (code_a, out_a, err_a), (code_b, out_b, err_b) = finish(a), finish(b)
    assert (code_a, code_b) == (0, 0), err_a + err_b
    assert (out_a + out_b).count("submitted as job") == 2  # the later one followed those jobs
    tasks = job_ids(tmp_path / "results")
    assert len(tasks) == 2 and len(sacct(slurm, ",".join(tasks))) == 2
    for folder in (tmp_path / "results").glob("store-e2e/*"):
        assert (folder / "run.log").read_text().count(f"run {folder.name}: suite") == 1
    assert metrics_by_run(tmp_path / "results") == {k: v for k, v in inline.items() if k[1] == 0}


@pytest.mark.slow
def test_a_run_on_two_tasks_is_one_job_whose_srun_tasks_train_together(slurm, tmp_path, inline):
    run_on_two_tasks(tmp_path, inline, "--executor", "slurm", "--resource", "cpus_per_task=1",
                     "--no-progress")
    (job,) = job_ids(tmp_path / "results")
    steps = subprocess.run(["sacct", "-n", "-P", "-j", job, "-o", "JobID,NTasks"],
                           env=slurm.env, capture_output=True, text=True, check=True).stdout
    assert f"{job}.0|2" in steps.split()  # one srun step of two tasks


@pytest.mark.slow
def test_with_accounting_down_jobs_are_followed_and_a_dead_one_is_seen(slurm, tmp_path):
    write_suite(tmp_path, "{steps: 4000}")  # outlasts the looks below (15 s and more)
    argv = ("run", "suite.yaml", "--only", "softmax", "--results", "results", "--executor",
            "slurm", "--resource", "cpus_per_task=1", "--no-progress")
    proc = bench(tmp_path, *argv)
    holder = checkpointed_holder(tmp_path / "results")
    (job,) = job_ids(tmp_path / "results")
    slurm.stop_daemon("slurmdbd")  # sacct answers nothing now
    try:
        unanswered = subprocess.run(["sacct", "-j", job], env=slurm.env, capture_output=True,
                                    check=False)
        assert unanswered.returncode != 0
        time.sleep(3 * POLL_S)  # the submitter looks at the job three times meanwhile
        assert proc.poll() is None  # still followed: squeue says it runs
        os.kill(holder, signal.SIGKILL)  # the job dies, as by the OOM killer
        code, out, err = finish(proc, timeout=120)
        assert code == 1 and "Traceback" not in err
        assert f"failed: job {job} ended FAILED" in out  # squeue's word, seen at once
    finally:
        slurm.start_accounting()
    # slurmctld hands accounting the job's end once slurmdbd is back: until then sacct still
    # says RUNNING, and a bench run would follow the dead job instead of submitting anew
    wait_for(lambda: sacct(slurm, job)[0]["State"] == "FAILED", "accounting to catch up")
    resumed(tmp_path, argv)
