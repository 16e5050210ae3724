"""Who holds a run: a claim file in the run's folder, changed only under a short lock file.

Nothing here needs more from a file system than an exclusive create and an atomic rename, both of
which NFS (v3 and later) and the parallel file systems of clusters provide, so the processes of
many machines can share one results folder. A run's holder is a process; on its own host it is
recognised exactly (pid and process start time), elsewhere by its heartbeat, a file it touches
every `HEARTBEAT_S` seconds; a heartbeat older than `STALE_S` belongs to a process that is gone
(a node that failed). A job requeued after preemption keeps its scheduler job id, so it takes
its earlier incarnation's claim at once.
"""

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.atomic import write_text

CLAIM = "claim.json"
HEARTBEAT = "heartbeat"
LOCK = ".lock"
HEARTBEAT_S = 30.0
# A heartbeat this old means its process is gone: ten beats missed (a clock skew of minutes
# between nodes is tolerated).
STALE_S = 600.0
# A transition holds the lock for milliseconds; a lock this old was left by a killed process.
LOCK_STALE_S = 60.0
LOCK_WAIT_S = 300.0
# Set in a cluster job's processes: the scheduler's id of the job (`<array>_<task>` in arrays).
JOB_ENV = "BENCH_JOB_ID"


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, Linux's /proc), None when there is
    no such process or it has ended (a zombie its parent has not reaped yet): with the pid it
    names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # from field 3 on; the name may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass(frozen=True)
class Owner:
    """A claimant: a process on a host, a token unique to one Store (two stores in one process
    are two claimants), and the cluster job it runs in, if any."""

    host: str
    pid: int
    since: str | None  # the process's start time, see process_start
    token: str
    job: str | None = None

    @classmethod
    def this_process(cls) -> "Owner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid), uuid.uuid4().hex,
                   os.environ.get(JOB_ENV) or None)

    def alive(self) -> bool:
        """Whether the owning process still runs; meaningful on the owner's host only."""
        return process_start(self.pid) == self.since

    def describe(self) -> str:
        where = f"process {self.pid} on host {self.host}"
        return where + (f" (job {self.job})" if self.job else "")


def read_claim(folder: Path) -> Owner | None:
    """The run's holder, None when nobody holds it. A claim file that cannot be parsed is
    nobody's (it was not written by a claimant: claims are written whole)."""
    try:
        data = json.loads((folder / CLAIM).read_text(encoding="utf-8"))
        return Owner(**{k: data[k] for k in ("host", "pid", "since", "token")},
                     job=data.get("job"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_claim(folder: Path, owner: Owner) -> None:
    write_text(folder / CLAIM, json.dumps(asdict(owner), sort_keys=True) + "\n")
    beat(folder)


def drop_claim(folder: Path) -> None:
    (folder / CLAIM).unlink(missing_ok=True)


def beat(folder: Path) -> None:
    """Say that the holder is alive (an empty file's modification time)."""
    (folder / HEARTBEAT).touch()


def heartbeat_age(folder: Path) -> float:
    """Seconds since the holder's last beat (infinite without one)."""
    try:
        return time.time() - (folder / HEARTBEAT).stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def holder_alive(holder: Owner, folder: Path, me: Owner) -> bool:
    """Whether `holder` still holds the run, as `me` can tell: exactly on the same host, by
    the job id for an earlier incarnation of `me`'s own job, by the heartbeat elsewhere."""
    if holder.token == me.token:
        return True
    if holder.job is not None and holder.job == me.job:
        return False  # this job ran before, and was requeued: that process is gone
    if holder.host == me.host:
        return holder.alive()
    return heartbeat_age(folder) < STALE_S


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the folder's transition lock (an exclusively created file) while reading and
    writing its record. A lock left by a killed process is broken once it is `LOCK_STALE_S`
    old; waiting longer than `LOCK_WAIT_S` is a TimeoutError naming the file."""
    lock = folder / LOCK
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            with suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime > LOCK_STALE_S:
                    lock.unlink()
                    continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock}: held for over {LOCK_WAIT_S:.0f} s; if no bench "
                                   "process is using this run, delete the file") from None
            time.sleep(0.02)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def heartbeat(folder: Path, every_s: float | None = None) -> Iterator[None]:
    """Beat for the run in `folder` from a background thread while the body runs."""
    stop = threading.Event()
    period = HEARTBEAT_S if every_s is None else every_s

    def run() -> None:
        while not stop.wait(period):
            with suppress(OSError):  # a full disk or a lost mount: the claim may go stale
                beat(folder)

    thread = threading.Thread(target=run, name="bench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
