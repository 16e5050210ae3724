"""Sweeps: the search space against the family's schema, pruning, and workers that die."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from support.textgen import TINY_LM, narrative_passages, write_jsonl

from bench.config.suite import derive_variant, load_suite, set_field
from bench.errors import Pruned, UserError
from bench.execution.sweep import Worker, load_study, open_storage, study_name, suggest
from bench.store.runs import Store

SUITE = """\
extends: {base}
suite: sweep-test
budget: {{flops: {flops}}}
data: {{train: {data}/train.jsonl}}
train: {{checkpoint_every: 4, validate_every: 4}}
objective: cwt
head: embedding_transpose
variants:
  cwt: {{}}
sweep:
  trials: {trials}
  objective: {{metric: val.nll, direction: minimize}}
  sampler: {{seed: 0, n_startup_trials: 2}}
  pruner: {{name: {pruner}, metric: val_nll, n_startup_trials: 1, n_warmup_steps: 0}}
  space:
    cwt.temperature: {{type: float, low: 0.1, high: 2.0, log: true}}
    train.optim.lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
    train.batch_size: {{type: categorical, choices: [8, 16]}}
"""


def write_suite(root: Path, *, trials: int = 3, flops: float = 3e8, pruner: str = "none",
                extra: str = "") -> Path:
    data = root / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "train.jsonl", narrative_passages(400, seed=1))
    path = root / "suite.yaml"
    path.write_text(SUITE.format(base=TINY_LM, data=data, trials=trials, flops=flops,
                                 pruner=pruner) + extra)
    return path


# --- the space ------------------------------------------------------------------------------

def test_fields_are_set_by_dotted_path_and_must_exist():
    config = {"train": {"optim": {"lr": 1.0}}, "objective": "cwt"}
    out = set_field(config, "train.optim.lr", 0.5)
    assert out["train"]["optim"]["lr"] == 0.5 and config["train"]["optim"]["lr"] == 1.0
    with pytest.raises(ValueError, match=r"no field 'lrr' in train\.optim"):
        set_field(config, "train.optim.lrr", 0.5)
    with pytest.raises(ValueError, match="no field 'x' in objective"):
        set_field(config, "objective.x", 1)


@pytest.mark.parametrize(("space", "message"), [
    ("    train.optim.lrr: {type: float, low: 0.1, high: 1.0}\n", "no field 'lrr'"),
    ("    train.batch_size: {type: int, low: 0, high: 4}\n", "train.batch_size"),
    ("    objective: {type: categorical, choices: [cwt, sigmoid]}\n", "'sigmoid'"),
    ("    cwt.temperature: {type: float, low: 0.0, high: 1.0, log: true}\n", "log-scale"),
])
def test_a_bad_space_is_a_located_error(tmp_path, space, message):
    path = write_suite(tmp_path)
    text = path.read_text()
    head, _ = text.split("  space:\n")
    path.write_text(head + "  space:\n" + space)
    with pytest.raises(UserError, match=message) as err:
        load_suite(path)
    assert f"{path}:" in str(err.value) and "sweep" in str(err.value)


def test_a_trial_is_the_variant_with_the_sampled_fields(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    trial = optuna.trial.FixedTrial({"cwt.temperature": 0.5, "train.optim.lr": 0.002,
                                     "train.batch_size": 16})
    params = suggest(trial, suite.head.sweep)
    variant = derive_variant(suite.family, suite.variants["cwt"], "trial-0000", params)
    assert variant.config.cwt.temperature == 0.5 and variant.config.train.batch_size == 16
    assert variant.config.train.optim.lr == 0.002
    assert variant.budget == suite.variants["cwt"].budget


def test_the_pruner_stops_a_trial_worse_than_the_median(tmp_path):
    suite = load_suite(write_suite(tmp_path, pruner="median"))
    study = load_study(suite, open_storage(str(tmp_path / "s.journal"), 30))
    good = optuna.trial.create_trial(
        params={}, distributions={}, value=1.0,
        intermediate_values={10: 2.0, 50: 1.5, 100: 1.0})
    study.add_trial(good)
    worker = Worker(suite, study, Store(tmp_path / "results"), "cpu", tmp_path)
    trial = study.ask()
    hear = worker._pruning(trial)
    hear(0.1, {"val_nll": 1.9, "val_loss": 0.0})  # better than the completed trial: goes on
    with pytest.raises(Pruned, match="val_nll = 3 at 50%"):
        hear(0.5, {"val_nll": 3.0, "val_loss": 0.0})
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {10: 1.9, 50: 3.0}


# --- whole sweeps ---------------------------------------------------------------------------

def bench(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_sweep_prunes_records_every_trial_and_resumes(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store beside the results
    path = write_suite(tmp_path, trials=4, pruner="median")
    results = tmp_path / "results"
    assert main(["sweep", str(path), "--results", str(results), "--no-progress",
                 "--n-trials", "3", "--track", "mlflow"]) == 0
    assert main(["sweep", str(path), "--results", str(results), "--no-progress",
                 "--track", "mlflow"]) == 0
    out = capsys.readouterr().out
    assert "study sweep-test.sweep:" in out and "best: trial" in out
    suite = load_suite(path)
    study = load_study(suite, open_storage(str(results / "sweeps" / "sweep-test.sweep.journal"),
                                           30))
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert len(trials) == 4  # resumed: the second command added one trial to the same study
    store = Store(results)
    for t in trials:
        run = t.user_attrs["run_id"]
        state = store.state(run)
        assert state == ("finished" if t.state == TrialState.COMPLETE else "pruned")
        if t.state == TrialState.COMPLETE:
            assert store.final_metrics(run)["val.nll"] == pytest.approx(t.value)
        assert (results / study_name(suite) / run / "run.log").is_file()
    # the trials are runs of one MLflow experiment, the study's, each ended as its trial did
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study_name(suite))
    tracked = {r.data.tags["bench.run_id"]: r for r in
               client.search_runs([experiment.experiment_id])}
    assert set(tracked) == {t.user_attrs["run_id"] for t in trials}
    for t in trials:
        mlflow_run = tracked[t.user_attrs["run_id"]]
        if t.state == TrialState.COMPLETE:
            assert mlflow_run.info.status == "FINISHED"
            assert mlflow_run.data.metrics["val.nll"] == pytest.approx(t.value)
        else:
            assert mlflow_run.info.status == "KILLED"  # pruned


def _sigkill_scenario(tmp_path: Path, storage: str, heartbeat: str) -> None:
    """Two workers; the first is killed with SIGKILL in the middle of a trial. The study still
    reaches its trials, each complete trial a finished run, none lost, none run twice."""
    env = {**os.environ, "BENCH_DATA": str(tmp_path / "cache")}
    n = 4
    path = write_suite(tmp_path, trials=n, flops=1.2e9)
    results = tmp_path / "results"
    common = ["sweep", str(path), "--results", str(results), "--storage", storage,
              "--no-progress", "--heartbeat", heartbeat]
    suite = load_suite(path)
    victim = bench(*common, "--worker-index", "0", env=env)
    other = bench(*common, "--worker-index", "1", env=env)
    deadline = time.monotonic() + 240
    killed = None
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name=study_name(suite),
                                      storage=open_storage(storage, 30))
        except KeyError:  # no worker has created the study yet
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            run = t.user_attrs.get("run_id")
            mid = run and (results / study_name(suite) / run / "checkpoints" / "pretrain.pt")
            if t.user_attrs.get("worker", {}).get("pid") == victim.pid and mid and mid.exists():
                victim.send_signal(signal.SIGKILL)
                killed = t
                break
    assert killed is not None, "the first worker never got into the middle of a trial"
    victim.wait()
    out, _ = other.communicate(timeout=300)
    assert other.returncode == 0, out
    study = optuna.load_study(study_name=study_name(suite), storage=open_storage(storage, 30))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == TrialState.FAIL
    # Its parameters were run again, as a new trial, and that run resumed the same run folder.
    again = [t for t in complete if t.params == killed.params]
    assert len(again) == 1 and again[0].user_attrs["run_id"] == killed.user_attrs["run_id"]
    runs = [t.user_attrs["run_id"] for t in complete]
    assert len(set(runs)) == n  # no run counted twice
    store = Store(results)
    assert all(store.state(r) == "finished" for r in runs)
    log = (results / study_name(suite) / killed.user_attrs["run_id"] / "run.log").read_text()
    assert "resuming at step" in log


@pytest.mark.slow
def test_a_killed_worker_loses_no_trial_on_the_embedded_storage(tmp_path):
    _sigkill_scenario(tmp_path, str(tmp_path / "results" / "sweeps" / "study.journal"), "30")


@pytest.mark.slow
def test_a_killed_worker_loses_no_trial_on_postgresql(tmp_path, postgres_url):
    _sigkill_scenario(tmp_path, postgres_url, "2")


# Each process waits for the same moment, then opens the storage: Optuna creates its tables.
_OPEN_AT = ("import sys, time\n"
            "from bench.execution.sweep import open_storage\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "open_storage(sys.argv[1], 30)\n")


def test_workers_opening_a_new_postgresql_database_at_once_all_open_it(postgres_url):
    """Started by hand or as cluster jobs, every worker may be the first: Optuna's schema is
    then created by several processes at once, and the losers of that race open it as well."""
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as con:  # the server's database may hold other tests' studies
        con.execute(sqlalchemy.text("CREATE DATABASE opened_together"))
    engine.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/opened_together"
    at = time.time() + 15  # past every process's imports
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(at)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(6)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(outputs)
    assert optuna.study.get_all_study_summaries(open_storage(url, 30)) == []


def test_optuna_dashboard_reads_the_embedded_storage(tmp_path):
    """`optuna-dashboard <journal>` serves the same study: its WSGI app lists it and its trial."""
    import io
    import json

    from optuna_dashboard import wsgi

    suite = load_suite(write_suite(tmp_path))
    journal = str(tmp_path / "sweeps" / "s.journal")
    study = load_study(suite, open_storage(journal, 30))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.5))
    app = wsgi(journal)

    def get(path: str) -> dict:
        statuses: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
                   "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
                   "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "wsgi.url_scheme": "http"}
        body = app(environ, lambda status, headers, *exc: statuses.append(status))
        assert statuses == ["200 OK"]
        return json.loads(b"".join(body))

    summaries = get("/api/studies")["study_summaries"]
    assert [(s["study_name"], s["directions"]) for s in summaries] == [
        ("sweep-test.sweep", ["minimize"])]
    detail = get(f"/api/studies/{summaries[0]['study_id']}")
    assert [t["values"] for t in detail["trials"]] == [[1.5]]
