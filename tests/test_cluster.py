"""Runs as cluster jobs through submitit's local executor (the same code as SLURM's): parallel
jobs reach the inline runs' metrics, a killed or preempted job loses nothing and counts once,
concurrent submitters never run a run twice, a detached suite is followed later."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from support.store_suite import write_suite

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.execution.cluster import JobRecord, Submitter, Tracked
from bench.store.claims import process_start, read_claim
from bench.store.provenance import now
from bench.store.runs import Store

# Timing and throughput differ from run to run; everything else a run records must not.
TIMED = ("seconds", "_per_s", ".iqr", "ms_per", "flops_per_s", "mfu", "peak_memory")
LOCAL = ("--executor", "local", "--resource", "cpus_per_task=1", "--no-progress")
# Long enough (a few seconds of training, a checkpoint every 2 steps) for a test to catch a
# job mid-training: a finished stage keeps no checkpoints.
BUDGET = "{steps: 400}"


def bench(root: Path, *argv: str, out: Any = subprocess.PIPE) -> subprocess.Popen:
    """`bench argv` in `root` on one thread, its output to `out` (a pipe: read by `finish`;
    a file for a command whose local jobs inherit it and would hold a pipe open)."""
    env = dict(os.environ, BENCH_DATA=str(root / "cache"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=root, env=env,
                            stdout=out, stderr=subprocess.STDOUT if out is not subprocess.PIPE
                            else subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMED)}


def metrics_by_run(results: Path) -> dict[tuple[str, int], dict[str, float]]:
    """Finished runs' metrics by (variant, seed): suites in other folders read other paths,
    so their run ids differ."""
    runs = Store(results).runs()
    assert all(r["state"] == "finished" for r in runs), [(r["run_id"], r["reason"]) for r in runs]
    return {(r["variant"], r["seed"]): untimed(r["metrics"]) for r in runs}


def wait_for(predicate, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resumed(root: Path, argv: tuple[str, ...]) -> dict[tuple[str, int], dict[str, float]]:
    """`bench run` again after its job ended mid-run: it resumes the suite's one run from its
    checkpoint; the finished runs' metrics."""
    code, out, err = finish(bench(root, *argv))
    assert code == 0, out + err
    (folder,) = (root / "results").glob("store-e2e/*")
    assert "stage pretrain: resuming at step" in (folder / "run.log").read_text()
    return metrics_by_run(root / "results")


def checkpointed_holder(results: Path) -> int:
    """The pid of the job process training the run, once it wrote a checkpoint."""
    wait_for(lambda: list(results.glob("store-e2e/*/checkpoints/pretrain.pt")),
             "a checkpoint of the job")
    (folder,) = results.glob("store-e2e/*")
    holder = read_claim(folder)
    assert holder is not None and holder.job is not None
    return holder.pid


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    """The four runs (two variants, two seeds) run inline, one after another."""
    root = tmp_path_factory.mktemp("inline")
    write_suite(root, BUDGET)
    code, _, err = finish(bench(root, "run", "suite.yaml", "--seeds", "0", "1",
                                  "--results", "results", "--no-progress"))
    assert code == 0, err
    return metrics_by_run(root / "results")


@pytest.mark.slow
def test_four_runs_two_at_a_time_match_the_inline_runs(tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--seeds", "0", "1",
                                  "--results", "results", "--max-parallel", "2", *LOCAL))
    assert code == 0, out + err
    assert metrics_by_run(tmp_path / "results") == inline
    lines = out.splitlines()
    submitted = [i for i, line in enumerate(lines) if "submitted as job" in line]
    finished = [i for i, line in enumerate(lines) if line.endswith(": finished")]
    assert len(submitted) == 4 and len(finished) == 4
    assert submitted[1] < finished[0] < submitted[2]  # two at once, the others as places free
    records = list((tmp_path / "results" / ".jobs" / "store-e2e").glob("*.json"))
    assert len({json.loads(p.read_text())["job_id"] for p in records}) == 4
    for run in Store(tmp_path / "results").runs():  # each run's provenance names its job
        prov = json.loads((tmp_path / "results" / "store-e2e" / run["run_id"] /
                           "provenance.json").read_text())
        assert Path(prov["job"]["stdout"]).exists() and prov["job"]["id"]


@pytest.mark.slow
def test_a_killed_job_fails_then_resumes_to_the_uninterrupted_metrics(tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--only", "softmax", "--results", "results", *LOCAL)
    proc = bench(tmp_path, *argv)
    os.kill(checkpointed_holder(tmp_path / "results"), signal.SIGKILL)  # as the OOM killer does
    code, out, err = finish(proc)
    assert code == 1 and "Traceback" not in err
    assert "failed: job" in out and "without recording how the run ended" in out
    (run,) = Store(tmp_path / "results").runs()
    assert run["state"] == "failed" and run["reason"].startswith("job ")
    assert resumed(tmp_path, argv) == {("softmax", 0): inline["softmax", 0]}


@pytest.mark.slow
def test_a_preempted_job_requeues_and_resumes_to_the_uninterrupted_metrics(tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    proc = bench(tmp_path, "run", "suite.yaml", "--only", "softmax", "--results", "results",
                 *LOCAL)
    first = checkpointed_holder(tmp_path / "results")
    os.kill(first, signal.SIGUSR2)  # SLURM's warning before preemption, as submitit asks for
    code, out, err = finish(proc)
    assert code == 0, out + err
    (folder,) = (tmp_path / "results").glob("store-e2e/*")
    log = (folder / "run.log").read_text()
    assert "stage pretrain: resuming at step" in log  # the requeued job, same job id
    saved = re.search(r"warned by the cluster, saved a checkpoint at step (\d+)", log)
    assert saved is not None, log  # at its next read of the losses, before the requeue
    assert f"resuming at step {saved.group(1)}" in log
    assert log.count(f"run {folder.name}: suite") == 2
    job_logs = list((tmp_path / "results" / ".jobs" / "store-e2e").glob("*/*_log.out"))
    assert len(job_logs) == 1 and "Requeued job" in job_logs[0].read_text()
    assert metrics_by_run(tmp_path / "results") == {("softmax", 0): inline["softmax", 0]}
    assert len(Store(tmp_path / "results").runs()) == 1


@pytest.mark.slow
def test_bench_cancel_stops_a_detached_job_and_the_next_run_resumes_it(tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--only", "softmax", "--results", "results", *LOCAL)
    with (tmp_path / "detached.out").open("w") as out_file:  # the local job inherits it
        detached = bench(tmp_path, *argv, "--detach", out=out_file).wait(timeout=120)
    assert detached == 0, (tmp_path / "detached.out").read_text()
    checkpointed_holder(tmp_path / "results")
    code, out, err = finish(bench(tmp_path, "cancel", "suite.yaml", "--only", "softmax",
                                  "--results", "results"), timeout=180)
    assert code == 0 and "store-e2e: 1 job cancelled" in out, out + err
    (run,) = Store(tmp_path / "results").runs()
    assert run["state"] == "running"  # left as the next bench run resumes it
    code, out, err = finish(bench(tmp_path, "status", "suite.yaml", "--only", "softmax",
                                  "--results", "results"), timeout=120)
    assert "interrupted" in out, out
    code, out, err = finish(bench(tmp_path, "cancel", "suite.yaml", "--results", "results"))
    assert code == 0 and "nothing cancelled" in out
    assert resumed(tmp_path, argv) == {("softmax", 0): inline["softmax", 0]}


@pytest.mark.slow
def test_two_submitters_of_one_suite_run_each_run_once(tmp_path, inline):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--results", "results", "--max-parallel", "2", *LOCAL)
    a, b = bench(tmp_path, *argv), bench(tmp_path, *argv)
    (code_a, out_a, err_a), (code_b, out_b, err_b) = finish(a), finish(b)
    assert (code_a, code_b) == (0, 0), err_a + err_b
    assert (out_a + out_b).count("submitted as job") == 2  # the later one followed those jobs
    assert "already submitted, following it" in out_a + out_b
    results = tmp_path / "results"
    for folder in results.glob("store-e2e/*"):
        assert (folder / "run.log").read_text().count(f"run {folder.name}: suite") == 1
    with closing(sqlite3.connect(results / "index.sqlite")) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert metrics_by_run(results) == {k: v for k, v in inline.items() if k[1] == 0}


@pytest.mark.slow
def test_a_detached_suite_is_followed_by_status_and_the_next_run(tmp_path):
    write_suite(tmp_path, BUDGET)
    argv = ("run", "suite.yaml", "--only", "cwt", "--results", "results", *LOCAL)
    code, out, err = finish(bench(tmp_path, *argv, "--detach"), timeout=120)
    assert code == 0 and "submitted as job" in out and "bench status suite.yaml" in out
    code, out, err = finish(bench(tmp_path, "status", "suite.yaml", "--only", "cwt",
                                  "--results", "results"), timeout=120)
    assert code == 0, err
    assert any(word in out for word in ("starting", "running", "finished"))
    code, out, err = finish(bench(tmp_path, *argv))
    assert code == 0, err
    assert "already submitted, following it" in out or "finished earlier" in out
    jobs = (tmp_path / "results" / ".jobs" / "store-e2e").glob("*/*_submitted.pkl")
    assert len(list(jobs)) == 1  # one job, followed twice
    code, out, err = finish(bench(tmp_path, "status", "suite.yaml", "--only", "cwt",
                                  "--results", "results"), timeout=120)
    assert "1 finished" in out


def test_a_malformed_resources_block_is_refused_before_anything_runs(tmp_path, capsys):
    suite = write_suite(tmp_path)
    suite.write_text(suite.read_text() + "resources: {gpus_per_node: eight}\n")
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), *LOCAL]) == 2
    assert "resources.gpus_per_node" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize("argv, message", [
    (["--executor", "local", "--resource", "gpu=8"], "--resource gpu=8: unknown resource"),
    (["--executor", "local", "--resource", "nodes=2"], "the local executor runs on this machine"),
    (["--executor", "local", "--nproc", "2"], "--nproc with --executor local"),
    (["--detach"], "--detach: only with --executor local or slurm"),
    (["--resource", "nodes=1"], "--resource: only with --executor local or slurm"),
    (["--executor", "local", "--max-parallel", "0"], "--max-parallel 0: expected at least 1"),
])
def test_executor_options_are_checked(tmp_path, capsys, argv, message):
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (results / ".jobs").exists()


def run_on_two_tasks(root: Path, inline: dict, *executor: str) -> None:
    """The softmax run as one job of two tasks on `executor`, against its inline run: the same
    metrics, up to the order floats are summed in over 400 steps."""
    suite = write_suite(root, BUDGET)  # two processes need the micro-batch in the config
    _override(suite, "train: {checkpoint_every: 2}",
              "train: {checkpoint_every: 2, micro_batch_size: 4}")
    code, out, err = finish(bench(root, "run", "suite.yaml", "--only", "softmax", "--results",
                                  "results", *executor, "--resource", "tasks_per_node=2"))
    assert code == 0, out + err
    ((key, metrics),) = metrics_by_run(root / "results").items()
    assert key == ("softmax", 0) and metrics["train.world_size"] == 2
    reference = inline["softmax", 0]
    assert metrics.keys() - {"train.world_size"} == reference.keys() - {"train.world_size"}
    for name in ("train.pretrain.final_loss", "lambada.ppl", "val.loss", "val.nll"):
        assert metrics[name] == pytest.approx(reference[name], rel=1e-3), name
    (folder,) = (root / "results").glob("store-e2e/*")
    assert (folder / "run.rank1.log").exists()  # the second task trained beside rank 0
    assert len(list((root / "results" / ".jobs" / "store-e2e").glob("*/*_1_log.out"))) == 1


@pytest.mark.slow
def test_a_run_on_two_processes_is_one_job_of_two_tasks(tmp_path, inline):
    run_on_two_tasks(tmp_path, inline, *LOCAL)


def _wsd_ladder(root: Path) -> None:
    """The suite as a wsd ladder of two rungs: the lower one branches at step 30 of 80."""
    suite = write_suite(root, "{steps: [40, 80]}")
    _override(suite, "train: {checkpoint_every: 2}",
              "train: {checkpoint_every: 2, optim: {schedule: wsd, warmup: 4, decay: 0.25}}")


def _override(suite: Path, line: str, by: str) -> None:
    """The suite file with its line `line` replaced by `by` (a line it must hold)."""
    text = suite.read_text()
    assert line in text, (line, text)
    suite.write_text(text.replace(line, by))


@pytest.mark.slow
def test_a_lower_rung_waits_for_its_branch_checkpoint_with_a_place_free(tmp_path):
    """Three places for two rungs: submitted at once, the lower rung would train the shared
    steps again; held back, it is submitted once its branch checkpoint is saved and branches."""
    _wsd_ladder(tmp_path)
    code, out, err = finish(bench(tmp_path, "run", "suite.yaml", "--only", "softmax",
                                  "--results", "results", "--max-parallel", "3", *LOCAL))
    assert code == 0, out + err
    runs = {r["metrics"]["train.steps"]: r for r in Store(tmp_path / "results").runs()}
    assert sorted(runs) == [40, 80] and all(r["state"] == "finished" for r in runs.values())
    longest, lower = runs[80]["run_id"], runs[40]["run_id"]
    folder = tmp_path / "results" / "store-e2e"
    prov = json.loads((folder / lower / "provenance.json").read_text())
    assert prov["branched_from"] == {"run": longest, "step": 30}
    lines = out.splitlines()
    waits = [i for i, line in enumerate(lines)
             if f"waits for run {longest} to save the checkpoint it branches from" in line]
    submitted = [i for i, line in enumerate(lines) if "submitted as job" in line]
    assert len(waits) == 1 and len(submitted) == 2
    assert longest in lines[submitted[0]] and lower in lines[submitted[1]]
    assert lines[submitted[0] + 1:submitted[1]]  # followed the longest rung a while first


def test_a_lower_rung_is_held_only_while_its_longest_rung_may_still_branch(tmp_path):
    """Held while the longest rung waits or runs without the file; released by the file, or
    by the longest rung's end without it (it then trains from the start)."""
    _wsd_ladder(tmp_path)
    longest, lower = (r for r in plan(load_suite(tmp_path / "suite.yaml"))
                      if r.variant.name == "softmax")
    branch = tmp_path / "branch.pt"
    said: list[str] = []
    submitter = Submitter("local", Store(tmp_path / "results"), "store-e2e", 3,
                          lambda run: None, lambda run: None,  # type: ignore[arg-type,return-value]
                          lambda run: branch if run is lower else None, said.append)
    submitter.waiting = [("longest", longest)]
    assert submitter._awaits_branch("lower", lower)  # its source waits for a place
    submitter.waiting = []
    source = Tracked("longest", longest, None)
    submitter.tracked = [source]
    assert submitter._awaits_branch("lower", lower)  # its source trains
    assert said == [f"lower: waits for run {longest.run_id} to save the checkpoint it "
                    "branches from"]  # said once
    branch.write_bytes(b"")
    assert not submitter._awaits_branch("lower", lower)
    branch.unlink()
    assert submitter._awaits_branch("lower", lower)
    source.done = True  # ended (finished or failed) without saving it
    assert not submitter._awaits_branch("lower", lower) and not submitter.held
    assert not submitter._awaits_branch("longest", longest)  # the longest rung never waits


class _Recording(Submitter):
    """Records what it would submit, each as a live job of this process: the places logic,
    not a cluster, is under test."""

    def _submit(self, todo: list) -> None:
        for label, run in todo:
            record = JobRecord("local", str(len(self.tracked)), now(), "", "",
                               socket.gethostname(), os.getpid(), process_start(os.getpid()))
            self.say(f"{label}: submitted")
            self.tracked.append(Tracked(label, run, record))


def test_rungs_released_later_on_slurm_take_places_as_local_jobs_do(tmp_path):
    """SLURM's first submission is arrays limited to --max-parallel; a rung released from
    holding goes in a later array, outside that limit, so it waits for a place."""
    _wsd_ladder(tmp_path)
    runs = plan(load_suite(tmp_path / "suite.yaml"))
    sources = [r for r in runs if r.branch_source is None]
    lower = {r.branch_source: r for r in runs if r.branch_source is not None}
    branch = {lower[s.run_id].run_id: tmp_path / f"{s.variant.name}.pt" for s in sources}
    said: list[str] = []
    submitter = _Recording("slurm", Store(tmp_path / "results"), "store-e2e", 1,
                           lambda run: None, lambda run: None,  # type: ignore[arg-type,return-value]
                           lambda run: branch.get(run.run_id), said.append)
    submitter.start(runs)
    assert [t.run for t in submitter.tracked] == sources  # both arrays' jobs, limit 1 each
    first = lower[sources[0].run_id]
    branch[first.run_id].write_bytes(b"")
    submitter.fill()
    assert len(submitter.tracked) == 2 and first.run_id not in submitter.held  # no place
    for t in submitter.tracked:
        t.done = True  # both longest rungs ended: the other lower rung is released too
    submitter.fill()
    assert [t.run for t in submitter.tracked[2:]] == [first]
    submitter.fill()
    assert len(submitter.tracked) == 3 and len(submitter.waiting) == 1
