"""`bench status`: where each planned run of a suite stands, read from the results folder (any
machine that sees it can ask) and, for cluster jobs, from SLURM (one sacct and one squeue).

A run that trains keeps `progress.json` live (bench/execution/live.py): its stage, step and
horizon, last loss and validation. The step rate is measured over the steps its process took
since it began the stage (validations and saves included), and the ETA is the stage's
remaining steps at that rate, counted from the file's last update; where stages follow the
current one, their steps are not known before they start and the ETA says so (`more_stages`).
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.contract import RunSpec
from bench.execution.cluster import JobStates, Observed, observe, read_record, view
from bench.execution.queue import requeued_text
from bench.store.folder import Unreadable, read_progress, read_provenance
from bench.store.runs import Store

# The states in which a run may still move (`bench status --watch` waits while any is).
MOVING = ("running", "queued", "starting")


@dataclass(frozen=True)
class RunStatus:
    """One run as `bench status` shows it (and `--json` writes it)."""

    run_id: str
    variant: str
    seed: int
    budget: dict[str, Any] | None  # unit and amount; None for a reference variant's run
    state: str
    detail: str
    log: str
    job: str | None = None
    job_state: str | None = None  # squeue's word for a SLURM job it lists
    elapsed_s: float | None = None  # the job's time used, or this process's since it began
    stage: str | None = None
    stage_index: int | None = None
    stages: int | None = None
    step: int | None = None  # of the stage
    total: int | None = None  # the stage's steps, once priced
    eta_s: float | None = None  # the stage's remaining steps at the measured rate
    more_stages: bool = False  # stages follow, whose time the ETA leaves out
    loss: float | None = None
    validation: dict[str, float] | None = None
    validated_at: int | None = None

    @property
    def percent(self) -> float | None:
        return None if not self.total or self.step is None else 100 * self.step / self.total

    def as_json(self) -> dict[str, Any]:
        """Its fields and percentage as JSON holds them (an undefined validation value, NaN,
        as null)."""
        validation = None if self.validation is None else {
            k: v if math.isfinite(v) else None for k, v in self.validation.items()}
        return asdict(self) | {"percent": self.percent, "validation": validation}


def look(store: Store, suite: str, runs: list[RunSpec], now: float | None = None
         ) -> list[RunStatus]:
    """Each of `runs` as it stands now (one look at the cluster for all of them)."""
    now = time.time() if now is None else now
    records = [read_record(store, suite, r.run_id) for r in runs]
    slurm = JobStates(records)
    return [_status(store, suite, r, observe(store, suite, r.run_id, record, slurm), now)
            for r, record in zip(runs, records, strict=True)]


def _status(store: Store, suite: str, run: RunSpec, seen: Observed, now: float) -> RunStatus:
    word, detail = view(seen)
    folder = store.run_dir(suite, run.run_id)
    record = seen.record
    job: dict[str, Any] = {}
    if record is not None:
        job = {"job": record.job_id}
        queued = seen.queued if word in MOVING else None
        if queued is not None:  # SLURM was asked anyway
            job |= {"job_state": queued.state, "elapsed_s": queued.elapsed_s}
            detail = ", ".join(filter(None, [detail, requeued_text(queued.requeues)]))
        elif word == "finished":
            detail = _requeues_of(folder, record.job_id)
    try:
        progress = read_progress(folder)
    except Unreadable as err:
        progress, detail = None, ", ".join(filter(None, [detail, str(err)]))
    budget = run.variant.budget
    return RunStatus(run.run_id, run.variant.name, run.seed,
                     {"unit": budget.unit, "amount": budget.amount} if run.variant.trains
                     else None, word, detail,
                     str(folder / "run.log" if record is None else record.stdout),
                     **job, **(_progress_fields(progress, word, now, "elapsed_s" in job)
                               if progress else {}))


def _progress_fields(progress: dict[str, Any], word: str, now: float, timed: bool
                     ) -> dict[str, Any]:
    """What progress.json says of a run shown as `word`: the ETA and elapsed time only while
    it runs (`timed`: SLURM gave the elapsed time already)."""
    step, total = progress["step"], progress["horizon"]
    fields = {"stage": progress["stage"], "stage_index": progress["stage_index"],
              "stages": len(progress["stages"]), "step": step, "total": total,
              "more_stages": progress["stage_index"] + 1 < len(progress["stages"]),
              "loss": progress["loss"], "validation": progress["validation"],
              "validated_at": progress["validated_at"]}
    if word != "running":
        return fields
    if not timed:
        fields["elapsed_s"] = max(now - progress["began"], 0.0)
    took, spent = step - progress["since_step"], progress["updated"] - progress["since"]
    if total is not None and took > 0 and spent > 0:
        fields["eta_s"] = max((total - step) * spent / took - (now - progress["updated"]), 0.0)
    return fields


def _requeues_of(run_dir: Path, job_id: str) -> str:
    """How many times a finished run's job was requeued, in words, as the job's last start
    recorded it in the run's provenance (nothing for none, or when it cannot tell)."""
    try:
        job = (read_provenance(run_dir) or {}).get("job")
    except (OSError, Unreadable):
        return ""
    n = job.get("requeues") if isinstance(job, dict) and job.get("id") == job_id else None
    return requeued_text(n) if isinstance(n, int) else ""
