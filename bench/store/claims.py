"""Who holds a run: a claim file in the run's folder, changed only under a short lock file.

Nothing here needs more from a file system than an exclusive create and an atomic rename, both of
which NFS (v3 and later) and the parallel file systems of clusters provide, so the processes of
many machines can share one results folder. A run's holder is a process, and one rule
(`holder_alive`) tells whether it still holds the run, for every command:

- a job requeued after preemption keeps its scheduler job id, so it takes its earlier
  incarnation's claim at once;
- on the holder's own host its process is looked up exactly (pid and process start time, from
  /proc): a process that is gone holds nothing, whatever its heartbeat says;
- where that cannot tell (another host; a start time the claim does not record; a system
  without /proc, where a used pid may be anyone's), the heartbeat decides, a file the holder
  touches every `HEARTBEAT_S` seconds: alive while younger than `STALE_S` (older belongs to a
  process that is gone, a node that failed) and not more than `CLOCK_SKEW_S` ahead of this
  machine's clock. A heartbeat from the future (a clock set wrong, a file touched by hand)
  proves nothing: trusted, it would keep a dead claim alive until then and `STALE_S` more.

A claim file that cannot be parsed, or whose fields are not what a claimant writes (host and
token strings, pid a positive 32-bit number, since and job a string or null), is nobody's claim.
"""

import errno
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
from typing import Any, TypeGuard

from bench.util.atomic import open_read, touch, write_text

CLAIM = "claim.json"
HEARTBEAT = "heartbeat"
LOCK = ".lock"
HEARTBEAT_S = 30.0
# A heartbeat this old means its process is gone: twenty beats missed (a clock skew of
# minutes between nodes is tolerated).
STALE_S = 600.0
# A heartbeat at most this far ahead of this machine's clock is a skewed clock's, and still
# counts; further ahead it proves nothing.
CLOCK_SKEW_S = 300.0
# A process id as a claimant's system gives it (pid_t: a positive 32-bit number).
MAX_PID = 2**31 - 1
# A claim (or a job record) is a few hundred bytes; a larger file was not written by bench.
MAX_RECORD_BYTES = 64 * 1024
# A transition holds the lock for milliseconds; a lock this old was left by a killed process.
LOCK_STALE_S = 60.0
LOCK_WAIT_S = 300.0
# Set in a cluster job's processes: the scheduler's id of the job (`<array>_<task>` in arrays).
JOB_ENV = "BENCH_JOB_ID"
# Whether this system has Linux's /proc, which tells each process's start.
HAS_PROC = Path("/proc/self/stat").exists()


def is_text(value: object) -> TypeGuard[str]:
    """Whether `value` is a string UTF-8 can hold: JSON's \\u escapes can make lone
    surrogates, which neither the index nor a terminal takes."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_pid(value: object) -> TypeGuard[int]:
    """Whether `value` can be a process id (an int, not a bool, in 1..MAX_PID)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_PID


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, Linux's /proc), None when there is
    no such process or it has ended (a zombie its parent has not reaped yet): with the pid it
    names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # from field 3 on; the name may hold spaces
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def process_running(pid: int, since: str | None) -> bool | None:
    """Whether process `pid`, started at `since` (see process_start), still runs on this host:
    exactly where /proc tells and the start is known; False once no process has the pid; None
    where one has it but this cannot tell whether it is the same process (its start not
    recorded, or no /proc)."""
    if not is_pid(pid):
        return False
    start = process_start(pid)
    if start is not None:
        return None if since is None else start == since
    if HAS_PROC:  # /proc says: no such process, or a zombie
        return False
    return None if _pid_used(pid) else False


def _pid_used(pid: int) -> bool:
    """Whether some process has `pid` (a zombie included), where there is no /proc."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


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

    def describe(self) -> str:
        where = f"process {self.pid} on host {self.host}"
        return where + (f" (job {self.job})" if self.job else "")


def read_claim(folder: Path) -> Owner | None:
    """The run's holder, None when nobody holds it. A claim file that cannot be parsed, or
    whose fields are not what a claimant writes, is nobody's (claims are written whole, by
    claimants)."""
    data = record_json(folder / CLAIM)
    if not isinstance(data, dict):
        return None
    host, pid, since, token, job = (data.get(k) for k in ("host", "pid", "since", "token",
                                                          "job"))
    if not (is_text(host) and is_pid(pid) and is_text(token)
            and all(v is None or is_text(v) for v in (since, job))):
        return None
    return Owner(host, pid, since, token, job)


def record_json(path: Path) -> Any:
    """The JSON value of a small record file (a claim, a job record); None when it cannot be
    read or parsed, or is larger than such a record ever is."""
    try:
        with open_read(path, follow=True) as f:  # a FIFO there would block
            raw = f.read(MAX_RECORD_BYTES + 1)
        return json.loads(raw.decode("utf-8")) if len(raw) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None


def write_claim(folder: Path, owner: Owner) -> None:
    write_text(folder / CLAIM, json.dumps(asdict(owner), sort_keys=True) + "\n")
    beat(folder)


def drop_claim(folder: Path) -> None:
    (folder / CLAIM).unlink(missing_ok=True)


def beat(folder: Path) -> None:
    """Say that the holder is alive (an empty file's modification time); a link planted there
    is replaced, never followed (`bench.util.atomic.touch`)."""
    touch(folder / HEARTBEAT)


def heartbeat_age(folder: Path) -> float:
    """Seconds since the holder's last beat (infinite without one; negative for a beat in
    this machine's future)."""
    try:
        return time.time() - (folder / HEARTBEAT).lstat().st_mtime  # a planted link: its own
    except OSError:
        return float("inf")


def beating(folder: Path) -> bool:
    """Whether the run's heartbeat says its holder lives: beaten within `STALE_S`, and at most
    `CLOCK_SKEW_S` ahead of this machine's clock."""
    return -CLOCK_SKEW_S <= heartbeat_age(folder) < STALE_S


def holder_alive(holder: Owner, folder: Path, me: Owner) -> bool:
    """Whether `holder` still holds the run, as `me` can tell (the rule in this module's
    docstring): by the job id for an earlier incarnation of `me`'s own job, by its process on
    the same host, by the heartbeat where its process cannot tell."""
    if holder.token == me.token:
        return True
    if holder.job is not None and holder.job == me.job:
        return False  # this job ran before, and was requeued: that process is gone
    if holder.host == me.host:
        running = process_running(holder.pid, holder.since)
        if running is not None:
            return running
    return beating(folder)


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
            if lock.is_dir() and not lock.is_symlink():  # never a lock: waiting would not end
                raise IsADirectoryError(errno.EISDIR, "a folder where the run's lock file "
                                        "belongs; remove it", str(lock)) from None
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
