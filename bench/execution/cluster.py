"""A suite's runs as cluster jobs through submitit: SLURM, or processes on this machine.

Each pending run becomes one job (one SLURM job array per distinct `resources:` block, at most
`max_parallel` of its jobs running at once) that calls `execute_run`, the code `bench run` runs
inline, with a store that writes only the run's folder. A job asking for several GPUs is one
multi-task job, one process per GPU, joined by torch.distributed as under torchrun.

The submitter keeps a record per run, `<results>/.jobs/<suite>/<run-id>.json` (executor, job id,
log files), written under the suite's submission lock: a later or concurrent `bench run`
reattaches to a live job instead of submitting again, and `bench status` finds a run's job and
logs from any machine that sees the results folder. A job that SLURM signals before preempting
it or at its time limit is requeued by submitit (`RunJob.checkpoint`); the requeued job keeps
its id, takes its earlier incarnation's claim at once and resumes from the run's last
checkpoint. A job that dies outright (killed, out of memory, a node lost) leaves the run
'running' with a dead holder: the watcher records it failed with the job's end, and the next
`bench run` resumes it from its checkpoint.

A job whose state this machine cannot see (SLURM's UNKNOWN, as for a job its accounting does not
list yet; a local job of another machine, or one whose process start was not recorded while its
pid is in use) is judged by its run (`job_alive`): alive while the run has a live holder (see
bench/store/claims.py), or for `UNSEEN_S` after its submission; after that, without a live holder,
it has ended. Every command shows a run's state by one rule (`shown_states`: `observe`, then
`view`), asking SLURM about a job only where the run's folder does not tell (`Observed.live`),
in one `sacct` and one `squeue` call for all the runs a command looks at (`JobStates`): squeue
tells why a job waits and how often it was requeued, and the state of the jobs accounting cannot
tell about (slurmdbd down or behind). A job pending for a reason no wait cures is cancelled and
`bench run` ends with an error saying so (`Submitter._refuse`).
"""

import json
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from bench.contract import RunSpec
from bench.errors import ClaimRefused, UserError
from bench.execution.partition import fitted, partition_nodes
from bench.execution.queue import (
    JOB_ID,
    Queued,
    cancel,
    partition_limits,
    queue_now,
    requeued_text,
)
from bench.resources import Resources
from bench.store.claims import (
    CLOCK_SKEW_S,
    JOB_ENV,
    STALE_S,
    holder_alive,
    is_pid,
    is_text,
    locked,
    process_running,
    process_start,
    read_claim,
    record_json,
)
from bench.store.folder import Unreadable, read_state
from bench.store.provenance import JOB_INFO_ENV, now
from bench.store.runs import Store
from bench.util.atomic import write_text
from bench.util.paths import nearest_existing

POLL_S = 5.0
# Times a job may reach its time limit and be requeued (a run longer than a partition's limit
# trains in slices; preemptions are not counted).
MAX_TIMEOUTS = 20
# sacct states of a job that may still run the run (PREEMPTED without a requeue is an end).
# UNKNOWN (also what submitit says while sacct does not list the job) tells nothing: see
# `job_alive`.
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
              "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "READY"}
SLURM_UNSEEN = "UNKNOWN"
# A job accounting cannot tell about and the controller no longer lists: it has ended, how is
# not known (sacct will say once accounting answers).
LEFT_QUEUE = "GONE FROM THE QUEUE (accounting did not say how)"
# How long after its submission a job whose state cannot be seen counts as alive without a live
# holder of its run (sacct lists a job within seconds; a local job claims its run as it starts).
UNSEEN_S = STALE_S


@dataclass(frozen=True)
class JobRecord:
    """The job that runs (or ran) one run, as its submitter recorded it."""

    executor: str
    job_id: str
    submitted: str
    stdout: str
    stderr: str
    host: str  # the submitting machine; a local job's controller process runs there
    pid: int | None = None  # a local job's controller process, and its start time
    since: str | None = None

    def live(self, slurm: "JobStates | None" = None) -> bool | None:
        """Whether the job may still run: None when this machine cannot tell (a local job of
        another machine, or one whose start was not recorded while its pid is in use;
        SLURM's UNKNOWN). `job_alive` decides those. A SLURM job's state is read in `slurm`,
        a look shared with other runs' jobs (without, one of its own)."""
        if self.executor == "local":
            if self.host != socket.gethostname():
                return None
            return process_running(self.pid or 0, self.since)
        state = (slurm or JobStates())(self)
        return None if state == SLURM_UNSEEN else state in SLURM_LIVE

    def ended_as(self, slurm: "JobStates | None" = None) -> str:
        """How an ended job ended, in words, with where its log is."""
        state = "" if self.executor == "local" else (slurm or JobStates())(self)
        how = f"ended {state}".strip()
        if state == SLURM_UNSEEN or (self.executor == "local" and self.live() is None):
            how = (f"was not seen ({state or 'its process unknown'}) and its run had no live "
                   "holder")
        return f"job {self.job_id} {how} without recording how the run ended; log {self.stderr}"


def job_alive(record: JobRecord, held: bool, slurm: "JobStates | None" = None) -> bool:
    """Whether the run's job may still run: as `JobRecord.live` sees it (in `slurm`); where
    that cannot tell, while its run has a live holder (`held`) or its submission is at most
    `UNSEEN_S` old (a submission time in the future, past a clock's skew, is not recent)."""
    live = record.live(slurm)
    if live is not None:
        return live
    age = time.time() - _timestamp(record.submitted)
    return held or -CLOCK_SKEW_S <= age < UNSEEN_S


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO time (`now()`'s); NaN for one that is not a time."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        return float("nan")


class JobStates:
    """The states of the SLURM jobs of several runs, for one look at them: the first state
    asked for asks the controller's queue in one `squeue` call and SLURM's accounting about all
    of their jobs in one `sacct` call (submitit's watcher asks about every job registered with
    it at once); the others are answered from those calls. The queue lists every job that may
    still run, with its state now, so it is believed first; accounting tells how a job it no
    longer lists ended, and where accounting cannot say (slurmdbd down or behind) such a job
    has ended all the same (`LEFT_QUEUE`). A look asks nothing where no SLURM job's state is
    needed."""

    def __init__(self, records: Iterable[JobRecord | None] = ()) -> None:
        self._records = [r for r in records if r is not None and r.executor == "slurm"]
        self._states: dict[str, str] = {}
        self._queue: dict[str, Queued] = {}

    def __call__(self, record: JobRecord) -> str:
        """The state of `record`'s job."""
        self._look(record)
        return self._states[record.job_id]

    def queued(self, record: JobRecord) -> Queued | None:
        """`record`'s job as SLURM's queue lists it; None where it is not listed (ended more
        than the cluster's MinJobAge ago, or squeue could not answer)."""
        self._look(record)
        return self._queue.get(record.job_id)

    def _look(self, record: JobRecord) -> None:
        if record.job_id in self._states:
            return
        import submitit

        watcher = submitit.SlurmJob.watcher
        asked = [record.job_id, *(r.job_id for r in self._records)]
        for job_id in asked:
            watcher.register_job(job_id)
        watcher.update()  # where sacct fails, submitit keeps the states it last had
        accounted = {job_id: watcher.get_state(job_id, mode="cache").upper()
                     for job_id in asked}
        queue = queue_now(asked)
        self._queue |= queue or {}
        if queue is None:  # the controller did not answer: accounting's word
            self._states |= accounted
        else:  # the controller lists every job that may still run, and its state now
            self._states |= {job_id: _state(queue.get(job_id), accounted[job_id])
                             for job_id in asked}
        self._records = []


def _state(queued: Queued | None, accounted: str) -> str:
    """A job's state: the controller's where its queue lists the job; for one it no longer
    lists (ended more than MinJobAge ago), accounting's end, or `LEFT_QUEUE` where accounting
    says none (down, behind, or still holding an earlier state)."""
    if queued is not None:
        return queued.state
    return LEFT_QUEUE if accounted in SLURM_LIVE or accounted == SLURM_UNSEEN else accounted


def _record_path(store: Store, suite: str, run_id: str) -> Path:
    return store.root / ".jobs" / suite / f"{run_id}.json"


def read_record(store: Store, suite: str, run_id: str) -> JobRecord | None:
    """The run's job record; one that cannot be read, or whose fields are not what a
    submitter writes, is as good as none (it is replaced at the next submission)."""
    data = record_json(_record_path(store, suite, run_id))
    try:
        record = JobRecord(**data)
    except TypeError:  # not an object, or fields missing or unknown
        return None
    return record if _well_formed(record) else None


def _well_formed(record: JobRecord) -> bool:
    """Whether a record's fields are what `Submitter._record` writes."""
    texts = (record.job_id, record.submitted, record.stdout, record.stderr, record.host)
    if not (record.executor in ("local", "slurm") and all(map(is_text, texts))
            and (record.since is None or is_text(record.since))):
        return False
    pid_ok = is_pid(record.pid) if record.executor == "local" else record.pid is None
    return (pid_ok and JOB_ID.fullmatch(record.job_id) is not None
            and not math.isnan(_timestamp(record.submitted)))


def _write_record(store: Store, suite: str, run_id: str, record: JobRecord) -> None:
    write_text(_record_path(store, suite, run_id), json.dumps(asdict(record), indent=2) + "\n")


def enter_job(threads: int) -> Any:
    """Set up a job's process (submitit's job environment, returned): its job id, logs and
    requeues for claims and provenance, its CPU threads."""
    import submitit
    import torch

    env = submitit.JobEnvironment()
    # submitit ignores SIGTERM in the job, which would then train on until SIGKILL: the job
    # stops at once instead; a process forked from it (lm-eval's bootstrap pool) ends as told
    signal.signal(signal.SIGTERM, _stop_job)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    os.environ[JOB_ENV] = env.job_id
    os.environ[JOB_INFO_ENV] = json.dumps({"stdout": str(env.paths.stdout),
                                           "stderr": str(env.paths.stderr),
                                           "requeues": _requeues()})
    torch.set_num_threads(min(threads, os.cpu_count() or 1))
    return env


def _requeues() -> int:
    """How many times SLURM requeued this job (preempted, out of time, `scontrol requeue`):
    its SLURM_RESTART_COUNT, 0 in a first start or a local job."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def _stop_job(signum: int, frame: Any) -> None:
    """SIGTERM, which SLURM sends a job it requeues (`scontrol requeue`, a preemption), cancels
    or stops at its time limit: the job ends now, its run left to resume from its last
    checkpoint in the requeued job (same job id: it takes the run's claim at once) or at the
    next `bench run`, which finds the job ended and says how."""
    print(f"{signal.Signals(signum).name}: this job stops now; its run resumes from its last "
          "checkpoint", flush=True)
    raise SystemExit(128 + signum)


def requeue(job: Any) -> Any:
    """submitit's `checkpoint`: preempted or out of time, the same call is requeued."""
    import submitit

    return submitit.helpers.DelayedSubmission(job)


class RunJob:
    """What a job runs: one run, in a store that writes its folder only. Checkpointable: on
    SLURM's signal submitit calls `checkpoint` and requeues the same call."""

    def __init__(self, run: RunSpec, results: str, device: str, cache_dir: str,
                 restart_corrupt: bool, threads: int):
        self.run, self.results, self.device = run, results, device
        self.cache_dir, self.restart_corrupt, self.threads = cache_dir, restart_corrupt, threads

    def __call__(self) -> str | None:
        """The run's failure reason, None when it finished (or another process holds it)."""
        import submitit

        from bench.execution.runner import execute_run
        from bench.family import get_family
        from bench.training.distributed import join, leave, pick_device

        env = enter_job(self.threads)
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False, overwrite=True)
        device = join(pick_device(self.device))
        try:
            store = Store(Path(self.results))  # in a job: the run's folder only, no index
            return execute_run(self.run, get_family(self.run.resolved["family"]), store, device,
                               Path(self.cache_dir), progress=False,
                               restart_corrupt=self.restart_corrupt)
        except ClaimRefused as e:  # finished, or held by a live process: nothing to do here
            print(f"run {self.run.run_id}: {e.status}; this job leaves it", flush=True)
            return None
        finally:
            leave()

    def checkpoint(self) -> Any:
        """Preempted or out of time: requeue this call. The run's checkpoints are on disk
        (every `checkpoint_every` steps), and the requeued job, which keeps this job's id,
        takes the claim at once and resumes from the last one."""
        return requeue(self)


class WorkerJob:
    """A sweep worker as a job: the command line's entry point (`entry`, `bench.cli.main`,
    handed in) called with `bench sweep ... --worker-index K` in the job's process; its trials
    are ordinary runs in their folders, its results go to the study's storage."""

    def __init__(self, entry: Callable[[list[str]], int], argv: list[str], threads: int):
        self.entry, self.argv, self.threads = entry, argv, threads

    def __call__(self) -> int:
        enter_job(self.threads)
        return self.entry(self.argv)

    def checkpoint(self) -> Any:
        """Preempted: requeued; the study retries the trial it was running (see
        bench/execution/sweep.py) and the trial's run resumes from its checkpoint."""
        return requeue(self)


def run_workers(kind: str, entry: Callable[[list[str]], int], argv: list[str], n: int,
                folder: Path, resources: Resources, name: str, say: Callable[[str], None]
                ) -> int:
    """`n` sweep workers as jobs, each calling `entry` with `argv`, waited for; 0 when all of
    them succeed."""
    executor = make_executor(kind, folder / "%j", resources, name, n)
    with refused_submissions(kind, folder), executor.batch():
        jobs = [executor.submit(WorkerJob(entry, [*argv, "--worker-index", str(k)],
                                          resources.cpus_per_task)) for k in range(n)]
    for k, job in enumerate(jobs):
        say(f"worker {k}: job {job.job_id} ({kind}), logs {job.paths.stdout.parent}/")
    codes = []
    for k, job in enumerate(jobs):
        try:
            codes.append(int(job.result() or 0))
        except Exception as err:  # submitit's job errors carry the job's traceback
            last = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            say(f"worker {k} (job {job.job_id}) failed: {last}; log {job.paths.stderr}")
            codes.append(1)
    return max(codes, default=0)


def check_resources(kind: str, blocks: dict[str, Resources]
                    ) -> dict[str, tuple[Resources, list[str]]]:
    """Each block's resources as a job of `kind` is submitted with them, and a line for each
    default lowered to fit: the local executor runs on this machine alone; on SLURM no node of
    the partition may lack what a job asks (`partition.fitted`: it would pend for ever), a
    UserError naming the field. SLURM's nodes are read once for all the blocks."""
    for resources in blocks.values():
        if kind == "local" and resources.nodes > 1:
            raise UserError(f"resources.nodes {resources.nodes}: the local executor runs on "
                            "this machine alone (nodes: 1)")
    nodes = partition_nodes() if kind == "slurm" else None
    return {name: (resources, []) if nodes is None else fitted(resources, nodes)
            for name, resources in blocks.items()}


def make_executor(kind: str, folder: Path, resources: Resources, suite: str,
                  max_parallel: int) -> Any:
    """A submitit executor for jobs of one resources block (`check_resources`' answer)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=kind,
                                         slurm_max_num_timeout=MAX_TIMEOUTS,
                                         local_max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError as err:  # no srun: not on a SLURM cluster
        raise UserError(f"--executor {kind}: {err}") from None
    executor.update_parameters(**resources.submitit_parameters(), name=f"bench-{suite}",
                               slurm_array_parallelism=max_parallel)
    return executor


@contextmanager
def refused_submissions(kind: str, folder: Path) -> Iterator[None]:
    """Submit jobs inside: a submission the scheduler refuses (sbatch's error) is a UserError
    saying its message, and what submitit wrote in `folder` for it before asking (the calls
    pickled, the batch script) is removed."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    before = set(_submission_files(folder))
    try:
        yield
    except (FailedJobError, FailedSubmissionError) as err:
        for path in set(_submission_files(folder)) - before:
            path.unlink(missing_ok=True)
        message = str(err).strip() or str(err.__cause__)
        who = "sbatch" if kind == "slurm" else "the local executor"
        raise UserError(f"--executor {kind}: {who} refused the submission: {message}") from None


def _submission_files(folder: Path) -> list[Path]:
    """What submitit writes in a job folder before it submits: each call pickled
    (`<uuid>.pkl`) and the batch script (`.submission_file_<uuid>.sh`)."""
    return [*folder.glob("*.pkl"), *folder.glob(".submission_file_*.sh")]


@dataclass
class Tracked:
    """One run the watcher follows, with the job that runs it (None: held by a process that
    is not our job, e.g. an inline `bench run`)."""

    label: str
    run: RunSpec
    record: JobRecord | None
    shown: str = ""
    done: bool = False
    failure: str | None = None


class Submitter:
    """Submits a suite's runs as jobs and follows them to their ends.

    A lower rung of a wsd ladder is held back while its longest rung may still save the
    checkpoint it branches from (`branch_of` says where): submitted at once, it would train its
    shared steps again. It is submitted when that file is there, or when the longest rung ended
    without it (it then trains from the start, as it would inline).
    """

    def __init__(self, kind: str, store: Store, suite: str, max_parallel: int,
                 job_of: Callable[[RunSpec], RunJob], resources_of: Callable[[RunSpec], Resources],
                 branch_of: Callable[[RunSpec], Path | None], say: Callable[[str], None]):
        self.kind, self.store, self.suite = kind, store, suite
        self.max_parallel, self.job_of, self.resources_of, self.say = (
            max_parallel, job_of, resources_of, say)
        self.branch_of = branch_of
        self.jobs_dir = store.root / ".jobs" / suite
        self.tracked: list[Tracked] = []
        # runs beyond max_parallel (local) and lower rungs waiting for their branch checkpoint
        self.waiting: list[tuple[str, RunSpec]] = []
        self.held: set[str] = set()  # the run ids of the lower rungs held back now
        self.submitted = False  # whether the first fill ran (SLURM: its arrays are limited)

    def start(self, runs: list[RunSpec]) -> None:
        """Reattach to the live jobs of `runs`, skip finished ones, submit the rest (for the
        local executor, as many as `max_parallel` allows; `fill` submits the others later)."""
        self._check_folders(runs)
        self.waiting = [(f"[{i}/{len(runs)}] {run.label} ({run.run_id})",
                         run) for i, run in enumerate(runs, 1)]
        self.fill()

    def _check_folders(self, runs: list[RunSpec]) -> None:
        """Where job records go must take them: a file where a folder belongs (or a folder
        where a record belongs) is a UserError naming it, before anything is submitted."""
        existing = nearest_existing(self.jobs_dir)
        if not existing.is_dir():
            raise UserError(f"{existing}: not a folder, where bench keeps job records; move it "
                            "out of the way")
        for run in runs:
            path = _record_path(self.store, self.suite, run.run_id)
            if path.is_dir():
                raise UserError(f"{path}: a folder where a job record belongs; move it out of "
                                "the way")

    def fill(self) -> None:
        """Under the suite's submission lock, look again at each waiting run (another
        submitter may have submitted it meanwhile) and submit those that still need a job,
        as many as there are places.

        A local job takes a place. SLURM's first submission is one array per resources block
        with `max_parallel` as its limit; a later one (rungs released from holding) is another
        array, outside that limit, so it takes places as local jobs do."""
        if not self.waiting:
            return
        with locked(self.jobs_dir):
            records = {run.run_id: read_record(self.store, self.suite, run.run_id)
                       for _, run in self.waiting}
            slurm = JobStates([*records.values(),
                               *(t.record for t in self.tracked if not t.done)])
            todo = [(label, run) for label, run in self.waiting
                    if self._needs_job(label, run, records[run.run_id], slurm)]
            self.waiting = todo  # a lower rung's source may wait behind it for a place
            ready = [(label, run) for label, run in todo if not self._awaits_branch(label, run)]
            room = len(ready)
            if self.kind == "local" or self.submitted:
                room = max(0, self.max_parallel - self._live_jobs(slurm))
            self.submitted = True
            going = {run.run_id for _, run in ready[:room]}
            self.waiting = [item for item in todo if item[1].run_id not in going]
            self._submit(ready[:room])

    def _awaits_branch(self, label: str, run: RunSpec) -> bool:
        """Whether `run` is a lower rung whose branch checkpoint is not saved yet while its
        longest rung, waiting or tracked here, may still save it (said once)."""
        source = run.branch_source
        path = self.branch_of(run)
        coming = source is not None and not (path is not None and path.is_file()) and (
            any(r.run_id == source for _, r in self.waiting)
            or any(t.run.run_id == source and not t.done for t in self.tracked))
        if coming and run.run_id not in self.held:
            self.say(f"{label}: waits for run {source} to save the checkpoint it branches from")
        self.held = (self.held | {run.run_id}) if coming else (self.held - {run.run_id})
        return coming

    def _needs_job(self, label: str, run: RunSpec, record: JobRecord | None,
                   slurm: JobStates) -> bool:
        """Whether `run`, with its job `record`, needs a job; if not, it is followed (a live
        job or holder) or skipped (finished). Its folder is the one `bench run` would find
        inline (`Store.folder`: a run id of another suite's folder is that run)."""
        folder = self.store.folder(run.run_id)
        suite = self.suite if folder is None else folder.parent.name
        seen = observe(self.store, suite, run.run_id, record, slurm)
        if record is not None and seen.live:
            self.say(f"{label}: job {record.job_id} already submitted, following it")
            self.tracked.append(Tracked(label, run, record))
            return False
        if seen.state == "finished":
            self.say(f"{label}: finished earlier, skipped")
            return False
        if seen.holder is not None:
            self.say(f"{label}: running in {seen.holder}, following it")
            self.tracked.append(Tracked(label, run, None))
            return False
        return True

    def _live_jobs(self, slurm: JobStates) -> int:
        return sum(1 for t in self.tracked
                   if not t.done and t.record is not None and t.record.live(slurm) is not False)

    def _submit(self, todo: list[tuple[str, RunSpec]]) -> None:
        """One submission (a SLURM job array) per distinct resources block."""
        groups: dict[str, list[tuple[str, RunSpec]]] = {}
        for label, run in todo:
            groups.setdefault(self.resources_of(run).model_dump_json(), []).append((label, run))
        for group in groups.values():
            resources = self.resources_of(group[0][1])
            executor = make_executor(self.kind, self.jobs_dir / "%j", resources, self.suite,
                                     self.max_parallel)
            with refused_submissions(self.kind, self.jobs_dir), executor.batch():
                jobs = [executor.submit(self.job_of(run)) for _, run in group]
            for (label, run), job in zip(group, jobs, strict=True):
                record = self._record(job)
                _write_record(self.store, self.suite, run.run_id, record)
                self.say(f"{label}: submitted as job {record.job_id} ({self.kind})")
                self.tracked.append(Tracked(label, run, record))

    def _record(self, job: Any) -> JobRecord:
        pid = int(job.job_id) if self.kind == "local" else None
        return JobRecord(self.kind, str(job.job_id), now(), str(job.paths.stdout),
                         str(job.paths.stderr), socket.gethostname(), pid,
                         None if pid is None else process_start(pid))

    def poll(self) -> None:
        """Look at every run not yet ended once: say what changed, record dead jobs' runs."""
        slurm = JobStates(t.record for t in self.tracked if not t.done)
        stuck: list[tuple[Tracked, Queued]] = []
        for t in self.tracked:
            if t.done:
                continue
            seen = observe(self.store, self.suite, t.run.run_id, t.record, slurm)
            state = seen.state
            if state != "finished" and seen.queued is not None and seen.queued.never_starts:
                stuck.append((t, seen.queued))
                continue
            if state == "finished":
                shown, t.done = "finished", True
            elif state in ("failed", "pruned") and not seen.live:
                shown, t.done, t.failure = f"{state}: {seen.reason}", True, seen.reason
            elif (state is None or (state == "running" and seen.holder is None)) and (
                    seen.live is False):
                assert t.record is not None
                why = t.record.ended_as(slurm)
                if state is None or self.store.reap(t.run.run_id, t.record.job_id, why, now()):
                    shown, t.done, t.failure = f"failed: {why}", True, why
                else:
                    continue  # another process took the run meanwhile: look again
            elif t.record is None and seen.holder is None:  # its holder, not our job, is gone
                why = "its process ended without recording how the run ended"
                shown, t.done, t.failure = f"failed: {why}", True, why
            else:
                shown = " ".join(view(seen))
            if shown != t.shown:
                job = "" if t.record is None else f" [job {t.record.job_id}]"
                self.say(f"{t.label}{job}: {shown}")
                t.shown = shown
        if stuck:
            self._refuse(stuck)

    def _refuse(self, stuck: list[tuple[Tracked, Queued]]) -> None:
        """Jobs SLURM keeps pending for a reason no wait cures (`Queued.never_starts`: the
        partition's limits, which sinfo does not show, refuse what they ask): cancelled, their
        runs left pending, and a UserError saying why and what the jobs asked."""
        jobs = [t.record.job_id for t, _ in stuck if t.record is not None]
        failed = cancel(jobs)
        t, queued = stuck[0]
        limits = partition_limits(queued.partition)
        others = f" (and {len(jobs) - 1} more)" if len(jobs) > 1 else ""
        raise UserError(
            f"job {jobs[0]}{others} can never start: squeue says PD ({queued.waiting}) in "
            f"partition {queued.partition}" + (f" ({limits})" if limits else "")
            + f"; it asks {self.resources_of(t.run).asked()}; "
            + (f"scancel failed ({failed}): cancel it by hand" if failed else "cancelled")
            + "; its runs stay pending: change the suite's resources block, or give "
            "--resource KEY=VALUE, and run again")

    def wait(self, poll_s: float = POLL_S) -> list[tuple[str, str]]:
        """Poll until every run ended; the failures as (label, reason)."""
        while True:
            self.poll()
            self.store.sync(self.suite)
            self.fill()
            if all(t.done for t in self.tracked) and not self.waiting:
                return [(t.label, t.failure) for t in self.tracked if t.failure]
            time.sleep(poll_s)


@dataclass(frozen=True)
class Observed:
    """One look at a run: its state and reason as its folder records them (None for both
    without a folder or state.json), its live holder in words (None when nobody live holds
    it), its job's record, and the SLURM states of the look (`live`)."""

    state: str | None
    reason: str | None
    holder: str | None
    record: JobRecord | None
    slurm: JobStates = field(default_factory=JobStates, repr=False, compare=False)

    @cached_property
    def live(self) -> bool | None:
        """Whether its job may still run (None: no job of ours; see `job_alive`), asked when
        first read: a finished run, or one with a live holder, is shown without it."""
        if self.record is None:
            return None
        return job_alive(self.record, self.holder is not None, self.slurm)

    @cached_property
    def queued(self) -> Queued | None:
        """Its SLURM job as the queue lists it (None: not a SLURM job, or not listed)."""
        if self.record is None or self.record.executor != "slurm":
            return None
        return self.slurm.queued(self.record)


def observe(store: Store, suite: str, run_id: str, record: JobRecord | None,
            slurm: JobStates | None = None) -> Observed:
    """Read the run's folder (its state, its claim and heartbeat); its job is asked about
    when `live` is first read, in `slurm` (a look shared with other runs; without, its own)."""
    folder = store.run_dir(suite, run_id)
    try:
        state = read_state(folder) or {}
    except Unreadable as err:
        state = {"state": "unreadable", "reason": str(err)}
    holder = read_claim(folder)
    alive = holder is not None and holder_alive(holder, folder, store.owner)
    return Observed(state.get("state"), state.get("reason"),
                    holder.describe() if alive and holder is not None else None, record,
                    slurm or JobStates())


def shown_states(store: Store, runs: Iterable[tuple[str, str, str | None]]
                 ) -> list[tuple[str, str]]:
    """Runs' states in a word and their details in words, by the one rule that `bench status`,
    `bench ls`, the report's per-run rows and the watcher of `bench run` share (`observe`,
    then `view`). `runs` are (suite, run id, the state an index holds for the run or None):
    a finished one spares the run's folder a read (a finished run is never claimed again).
    The SLURM jobs of the others are one look (`JobStates`)."""
    runs = list(runs)
    records = [None if recorded == "finished" else read_record(store, suite, run_id)
               for suite, run_id, recorded in runs]
    slurm = JobStates(records)
    return [view(Observed("finished", None, None, None)) if recorded == "finished"
            else view(observe(store, suite, run_id, record, slurm))
            for (suite, run_id, recorded), record in zip(runs, records, strict=True)]


def view(seen: Observed) -> tuple[str, str]:
    """A run's state in a word and its detail in words, as every command shows it (see
    `shown_states`)."""
    if seen.state == "finished":
        return "finished", ""
    if seen.state == "running" and seen.holder is not None:
        return "running", f"in {seen.holder}"
    if seen.live and seen.record is not None:
        queued = seen.queued
        waits = [] if queued is None else [f"PD ({queued.waiting})" if queued.waiting else "",
                                           requeued_text(queued.requeues)]
        return (("queued" if seen.record.executor == "slurm" else "starting"),
                ", ".join([f"as job {seen.record.job_id}", *filter(None, waits)]))
    if seen.state in ("failed", "pruned", "unreadable"):
        return seen.state, seen.reason or ""
    if seen.state == "running":
        return "interrupted", "nobody holds it: the next bench run resumes it"
    return "pending", "not started"

