"""SLURM's queue as the controller sees it, and what a user does to it: `squeue` for the jobs'
states, why they wait, how long they ran and how often they were requeued; `scancel`; and the
reasons a pending job gives that say it will never start.

Only the command-line surface stable across SLURM 22.05 to 24.x is used: `squeue --noheader
--array --states=all --jobs=ID,... --Format` with the fields JobArrayID, State, Reason, TimeUsed,
RestartCnt and Partition, each ended by `|`; `scancel JOB...`; `scontrol show partition NAME
--oneliner`.
"""

import re
import subprocess
from dataclasses import dataclass

# submitit's SLURM job ids: a job or an array task (`12_3`); a local job's controller pid
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
# Reasons of a pending job that no wait cures: the partition's or the association's per-job
# limits refuse what it asks, its constraints or account are invalid, its dependency failed.
# (`ReqNodeNotAvail`, `Resources`, `Priority`, group limits: it starts once others end.)
NEVER_STARTS = re.compile(r"Partition(Config|NodeLimit|TimeLimit)|BadConstraints"
                          r"|Invalid(Account|QOS)|DependencyNeverSatisfied"
                          r"|(QOS|Assoc)Max\w*PerJob\w*")


def ask(command: list[str]) -> "subprocess.CompletedProcess[str] | None":
    """A SLURM command's answer, its output as text; None where it cannot run here (not
    installed: no SLURM on this machine) or gives no answer within a minute."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


@dataclass(frozen=True)
class Queued:
    """A SLURM job as the controller's queue lists it (squeue): its state, why it waits
    (`Priority`, `Resources`, `BeginTime` after a requeue; `None` once it runs), how long it
    has run (squeue's TimeUsed, `[days-][hours:]minutes:seconds`) and how many times it was
    requeued, and the partition it runs in."""

    state: str
    reason: str
    elapsed: str
    requeues: int
    partition: str

    @property
    def waiting(self) -> str | None:
        """Why a pending job waits, in squeue's word; None for a job that is not pending, or
        not yet looked at by the scheduler (squeue's `None`)."""
        return self.reason if self.state == "PENDING" and self.reason != "None" else None

    @property
    def elapsed_s(self) -> float | None:
        """TimeUsed in seconds (None where squeue wrote something else)."""
        days, _, clock = self.elapsed.rpartition("-")
        parts = clock.split(":")
        if not (1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)
                and (days == "" or days.isdigit())):
            return None
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return float(seconds + int(days or 0) * 86400)

    @property
    def never_starts(self) -> bool:
        """Whether it is pending for a reason no wait cures (`NEVER_STARTS`)."""
        return self.waiting is not None and NEVER_STARTS.fullmatch(self.waiting) is not None


def requeued_text(n: int) -> str:
    """How many times a job was requeued, in words; nothing for none."""
    return f"requeued {n} time{'s' * (n != 1)}" if n > 0 else ""


# squeue's long format, one job a line, fields ended by `|` (SLURM 22.05 to 24.x alike)
QUEUE_FORMAT = "JobArrayID:|,State:|,Reason:|,TimeUsed:|,RestartCnt:|,Partition:|"


def queue_now(job_ids: list[str]) -> dict[str, Queued] | None:
    """These jobs as SLURM's queue lists them (array tasks one by one; ended jobs stay listed
    for the cluster's MinJobAge), by id, whoever submitted them: squeue asks the controller,
    not accounting. A job it no longer lists is left out; None when squeue cannot answer."""
    if not job_ids:
        return {}
    done = ask(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}",
                f"--Format={QUEUE_FORMAT}"])
    if done is None:
        return None
    if done.returncode != 0:  # also when it lists none of them: "Invalid job id specified"
        return {} if "invalid job id" in done.stderr.lower() else None
    return dict(entry for line in done.stdout.splitlines() if (entry := _queue_entry(line)))


def _queue_entry(line: str) -> tuple[str, Queued] | None:
    """One line of squeue's `QUEUE_FORMAT` as (job id, Queued); None for one that is not."""
    fields = [f.strip() for f in line.split("|")]
    if len(fields) < 6 or not JOB_ID.fullmatch(fields[0]):
        return None
    job_id, state, reason, elapsed, restarts, partition = fields[:6]
    return job_id, Queued(state, reason, elapsed, int(restarts) if restarts.isdigit() else 0,
                          partition)


def cancel(job_ids: list[str]) -> str | None:
    """Cancel these jobs (scancel: SIGTERM to a running job's processes, a pending one
    removed); what scancel said when it failed, else None."""
    if not job_ids:
        return None
    done = ask(["scancel", *job_ids])
    if done is None:
        return "scancel did not run (not found, or no answer within a minute)"
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def partition_limits(name: str) -> str:
    """The limits of partition `name` that a job may run into (MaxCPUsPerNode, MaxMemPerNode,
    MaxNodes, MaxTime, the accounts and QOS it allows), as `scontrol show partition` says
    them, those that limit nothing left out; empty when it cannot tell."""
    done = ask(["scontrol", "show", "partition", name, "--oneliner"])
    fields = done.stdout.split() if done is not None and done.returncode == 0 else []
    return " ".join(f for f in fields if f.startswith(("Max", "AllowAccounts", "AllowQos",
                                                        "DenyAccounts", "DenyQos"))
                    and f.partition("=")[2] not in ("UNLIMITED", "ALL", "(null)", ""))
