"""Weights & Biases: one W&B run per harness run, its id the run id (so a resumed or requeued
run continues it: `resume="allow"`), in project `$WANDB_PROJECT` (default `headless-bench`),
grouped by suite (a sweep's trials: its study); the resolved config, the run's tags, each curve
column logged at its step, the final metrics in the summary, the run folder's record files
as an artifact (`record-<run id>`). Its files are in the run's folder (`<run>/wandb/`).

Mode: `$WANDB_MODE` where set, else online with `$WANDB_API_KEY`, else offline (the run is
written to its folder for `wandb sync`): a job on a node without network never waits for a
login prompt. W&B has no flush a checkpoint could wait for, and a killed process loses what
its service had not written: so a resumed run in offline mode (a new offline run folder of the
same id) is sent the whole curve, and its folder holds every step (the killed process's folder
holds a part); online, W&B resumes the run and drops steps at or below the last it holds.
"""

import os
from pathlib import Path
from typing import Any, Literal, cast

from bench.tracking.tracker import TrackedRun, numbers

MODES = ("online", "offline", "disabled", "shared")


class Tracker:
    def __init__(self) -> None:
        self.run: Any = None

    def start(self, run: TrackedRun) -> int:
        import wandb

        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline")
        if mode not in MODES:
            raise ValueError(f"WANDB_MODE={mode!r}: expected one of {', '.join(MODES)}")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "headless-bench", group=run.suite,
            name=run.name, id=run.run_id, resume="allow", config=run.config,
            tags=[run.variant, f"seed {run.seed}", run.budget], dir=str(run.folder),
            mode=cast(Literal["online", "offline", "disabled", "shared"], mode),
            notes=f"headless-bench run {run.run_id} of suite {run.suite}, commit {run.commit}",
            reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        return 0 if mode == "offline" else run.resumed_at

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.run.log(numbers(row), step=row["step"])

    def flush(self) -> None:
        """Nothing to wait for: W&B's service process holds what was logged."""

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        import wandb

        self.run.summary.update(metrics)
        record = wandb.Artifact(f"record-{self.run.id}", type="run-record")
        for path in files:
            record.add_file(str(path))
        self.run.log_artifact(record)

    def close(self, ended: str) -> None:
        self.run.finish(exit_code=0 if ended == "finished" else 1)
