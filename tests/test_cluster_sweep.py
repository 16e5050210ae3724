"""`bench sweep --executor local`: every sweep worker a submitit job on this machine.

The jobs write their trial runs' folders only (a store in a job keeps no index); the study's
storage holds the trials, and a reader of the index imports the runs from their folders.
"""

import json
import re
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_sweep import write_suite

from bench.cli import main
from bench.config.suite import load_suite
from bench.execution.sweep import load_study, open_storage, study_name
from bench.store.runs import Store

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def sweep_as_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                  workers: int, trials: int, executor: str = "local") -> None:
    """Run the tiny LM sweep with `workers` worker jobs of one CPU each (`executor`'s), then
    check the study, the trial runs' folders, the jobs' logs and the index imported from the
    folders."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCH_JOB_ID", raising=False)
    path = write_suite(tmp_path, trials=trials, pruner="median")
    results = tmp_path / "results"
    code = main(["sweep", str(path), "--results", str(results), "--no-progress",
                 "--executor", executor, "--workers", str(workers),
                 "--resource", "cpus_per_task=1"])
    out = capsys.readouterr().out
    assert code == 0, out

    suite = load_suite(path)
    name = study_name(suite)
    study = load_study(suite, open_storage(str(results / "sweeps" / f"{name}.journal"), 30))
    trials_done = [t for t in study.get_trials() if t.state in DONE]
    assert len(trials_done) == trials

    # One job per worker, each with its logs in its own folder under results/.jobs/.
    jobs = dict(re.findall(rf"^worker (\d+): job ([\d_]+) \({executor}\), logs ", out, re.M))
    assert sorted(jobs) == [str(k) for k in range(workers)], out
    assert len(set(jobs.values())) == workers
    for job in jobs.values():
        folder = results.resolve() / ".jobs" / "sweeps" / name / job
        assert f"logs {folder}/" in out
        assert "Job completed successfully" in (folder / f"{job}_0_log.out").read_text()
        assert (folder / f"{job}_0_log.err").is_file()

    # Every trial ran inside one of those jobs, on the one CPU thread the job was given.
    store = Store(results)
    job_ids = set(jobs.values())
    for t in trials_done:
        run = t.user_attrs["run_id"]
        assert store.state(run) == ("finished" if t.state == TrialState.COMPLETE else "pruned")
        provenance = json.loads((results / name / run / "provenance.json").read_text())
        assert provenance["job"]["id"] in job_ids
        assert provenance["torch_threads"] == 1

    # The jobs wrote no index; reading it imports their runs from the folders.
    assert not (results / "index.sqlite").exists()
    listed = {r["run_id"]: r for r in store.runs(name)}
    assert set(listed) == {t.user_attrs["run_id"] for t in trials_done}
    for t in trials_done:
        row = listed[t.user_attrs["run_id"]]
        assert row["variant"] == f"trial-{t.number:04d}"
        if t.state == TrialState.COMPLETE:
            assert row["state"] == "finished"
            assert row["metrics"]["val.nll"] == pytest.approx(t.value)


@pytest.mark.slow
def test_two_worker_jobs_complete_the_study(tmp_path, monkeypatch, capsys):
    sweep_as_jobs(tmp_path, monkeypatch, capsys, workers=2, trials=3)


@pytest.mark.slow
def test_a_single_worker_is_still_a_job(tmp_path, monkeypatch, capsys):
    sweep_as_jobs(tmp_path, monkeypatch, capsys, workers=1, trials=2)


@pytest.mark.parametrize(("resources", "message"), [
    (["--resource", "gpus_per_node=x"],
     "--resource gpus_per_node=x: gpus_per_node: Input should be a valid integer"),
    (["--resource", "nodes=2"],
     "resources.nodes 2: the local executor runs on this machine alone"),
])
def test_bad_resources_exit_2_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                         resources, message):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    code = main(["sweep", str(path), "--results", str(results), "--executor", "local",
                 "--workers", "2", *resources])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {message}" in err and "Traceback" not in err
    assert not (results / ".jobs").exists()
    assert not results.exists()  # no study created, no job submitted


def test_resources_without_an_executor_are_refused(tmp_path, monkeypatch, capsys):
    """Worker processes of the command itself take no job resources: saying so beats ignoring
    the option."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    code = main(["sweep", str(path), "--results", str(results), "--workers", "2",
                 "--resource", "cpus_per_task=1"])
    assert code == 2
    assert "error: --resource: only with --executor local or slurm" in capsys.readouterr().err
    assert not results.exists()
