"""MLflow: one MLflow run per harness run, in the experiment named after its suite (a sweep's
trials: its study's), tagged with the run id, suite, variant, seed, budget and git commit
(`bench.*`, `mlflow.source.git.commit`); the resolved config flattened into params, each curve
column a metric with its step, the final metrics at the last step, the run folder's record
files as artefacts.

Where: `MLFLOW_TRACKING_URI` (a team server, `http://host:5000`), else a local store beside the
results, `sqlite:///<results>/mlflow.db` with artefacts in `<results>/mlartifacts` (`mlflow ui
--backend-store-uri sqlite:///results/mlflow.db` shows it). A resumed run finds its MLflow run
by the `bench.run_id` tag and reads the last step it holds (the history of `loss`), so no step
is logged twice. Metrics are sent asynchronously and waited for at each checkpoint. A server
that does not answer is given up after a few retries (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, default
here 3, and `..._TIMEOUT`, 30 s), so a run does not wait minutes on it.
"""

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bench.tracking.tracker import TrackedRun, numbers

BATCH = 1000  # metrics in one request (MLflow's limit); params: 100
MAX_PARAM = 6000  # characters of a param's value MLflow keeps
STATES = {"finished": "FINISHED", "failed": "FAILED", "pruned": "KILLED",
          "interrupted": "KILLED"}


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `model.preset`; lists and empty mappings as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flat(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM]
    return out


class Tracker:
    def __init__(self) -> None:
        self.client: Any = None
        self.run_id = ""
        self.step = 0
        self.pending: list[Any] = []

    def start(self, run: TrackedRun) -> int:
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
                            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient
        from mlflow.entities import Param

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table migrations' INFO lines

        results = run.folder.parents[1]
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{results / 'mlflow.db'}"
        self.client = client = MlflowClient(uri)
        experiment = self._experiment(run.suite, results)
        found = client.search_runs([experiment], f"tags.`bench.run_id` = '{run.run_id}'",
                                   max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
            self.step = max((m.step for m in client.get_metric_history(self.run_id, "loss")),
                            default=run.resumed_at)
            return self.step
        tags = {f"bench.{k}": v for k, v in run.tags.items()} | {
            "mlflow.runName": run.name, "mlflow.source.git.commit": run.commit or "",
            "bench.folder": str(run.folder)}
        self.run_id = client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        params = [Param(k, v) for k, v in flat(run.config).items()]
        for i in range(0, len(params), 100):
            client.log_batch(self.run_id, params=params[i:i + 100])
        return 0

    def _experiment(self, name: str, results: Path) -> str:
        """The experiment's id, created when missing (two jobs may create it at once)."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else (
            (results / "mlartifacts").resolve().as_uri())
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:
            existing = self.client.get_experiment_by_name(name)
            if existing is None:
                raise
            return str(existing.experiment_id)

    def log(self, rows: list[dict[str, Any]]) -> None:
        self._send([(k, v, row["step"]) for row in rows for k, v in numbers(row).items()])
        self.step = rows[-1]["step"]

    def _send(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v, step in points]
        for i in range(0, len(metrics), BATCH):
            self.pending.append(self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH],
                                                      synchronous=False))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            future.wait()

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        self._send([(k, v, self.step) for k, v in metrics.items()])
        self.flush()
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, ended: str) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, STATES[ended])
