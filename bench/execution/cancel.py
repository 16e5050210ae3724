"""`bench cancel`: stop a suite's jobs and leave each run as the next `bench run` resumes it.

A SLURM job is cancelled with `scancel` (a running one gets SIGTERM and stops at once, see
`cluster.enter_job`; a pending one leaves the queue); a local job's controller process gets
SIGTERM, which it forwards to the job. The run of a job that had started stays `running` with
no live holder (shown `interrupted`) and resumes from its last checkpoint; a run whose job
never started stays pending. The command returns once the jobs have ended (SLURM's KillWait,
a few seconds), so a `bench run` right after it finds the runs resumable.

Only jobs of the runs the selection plans are touched, never a job this store has no record
of; a `bench run` still following the suite submits its runs that were waiting for a place,
so stop it first.
"""

import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress

from bench.errors import UserError
from bench.execution.cluster import JobRecord, JobStates, read_record
from bench.execution.queue import cancel
from bench.store.runs import Store

ENDED_WITHIN_S = 120.0  # SLURM's KillWait is 30 s by default; a local job stops at once


def cancel_jobs(store: Store, suite: str, run_ids: list[str], say: Callable[[str], None]
                ) -> int:
    """Cancel the live jobs of these runs, wait for them to end; how many were cancelled."""
    records = {run_id: read_record(store, suite, run_id) for run_id in run_ids}
    slurm = JobStates(records.values())
    live = {run_id: r for run_id, r in records.items() if r is not None and r.live(slurm)}
    slurm_jobs = [r.job_id for r in live.values() if r.executor == "slurm"]
    failed = cancel(slurm_jobs)
    if failed:
        raise UserError(f"scancel {' '.join(slurm_jobs)}: {failed}")
    for record in live.values():
        if record.executor == "local" and record.pid is not None:
            with suppress(ProcessLookupError):  # ended meanwhile
                os.kill(record.pid, signal.SIGTERM)  # submitit's controller forwards it
    _wait_ended(list(live.values()))
    for run_id, record in live.items():
        say(f"run {run_id}: job {record.job_id} ({record.executor}) cancelled; the next "
            "bench run resumes the run")
    return len(live)


def _wait_ended(records: list[JobRecord]) -> None:
    """Wait until none of these jobs may still run (each look one sacct and one squeue)."""
    deadline = time.monotonic() + ENDED_WITHIN_S
    while records and time.monotonic() < deadline:
        slurm = JobStates(records)
        records = [r for r in records if r.live(slurm) is not False]
        if records:
            time.sleep(1.0)
    if records:
        raise UserError(f"cancelled, but job {', '.join(r.job_id for r in records)} has not "
                        f"ended after {ENDED_WITHIN_S:g} s; `bench status` shows when it has")
