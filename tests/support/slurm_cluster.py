"""A real one-node SLURM cluster from Debian's packages, private to the tests that need it.

MariaDB, slurmdbd, slurmctld and slurmd run from one folder (their configuration, state, sockets,
pid files and logs), on free loopback ports, so a cluster the machine already runs is never
touched; munged is the machine's own where one answers, else one started for the cluster.
SLURM's accounting goes through slurmdbd to MariaDB, as on a production cluster, so `sacct`
answers. Everything started is stopped by the pid it recorded, never by name, and the folder is
removed.

The daemons run as root (a test machine's jobs run as the user who submits them: root on CI).
Where the packages are missing a root CI machine installs them for the test session
(`support.debian_packages`) and purges them afterwards; anywhere else the tests skip.

By hand: `make slurm-up` starts one in `BENCH_SLURM_DIR` (default /tmp/headless-bench-slurm)
and prints the `SLURM_CONF` to export; `make slurm-down` stops it.

Checked with SLURM 22.05 (Debian 12); slurm.conf keeps to settings 23.x and 24.x read alike. A
requeued job waits 10 s before it starts again (`AuthInfo=cred_expire=10`, SLURM's default 120
s), so the tests of requeues and time limits take a few minutes, not ten.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from support.debian_packages import provided
from support.processes import free_ports, run_checked

PACKAGES = ("slurm-wlm", "slurmdbd", "mariadb-server", "munge")
PROGRAMS = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "squeue", "sacct", "sacctmgr",
            "scontrol", "scancel", "sinfo", "munged", "mariadbd", "mariadb-install-db")
CLUSTER = "bench"
PARTITION = "debug"
DB_PASSWORD = "bench-accounting"  # the private MariaDB listens on 127.0.0.1 alone
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged")  # stopped in this order
START_TIMEOUT = 60.0
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # where SLURM's commands reach munged
# munged, as the munge user, keeps its pid, log and seed in its own folder
OWN_FOLDER = {"munged": "munge"}


def _programs() -> dict[str, str] | None:
    found = {name: shutil.which(name) for name in PROGRAMS}
    return None if None in found.values() else {k: v for k, v in found.items() if v}


def _wait(what: str, ready: Callable[[], bool], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tails = "\n".join(f"{log}:\n{log.read_text(errors='replace')[-2000:]}"
                      for log in logs if log.exists())
    raise RuntimeError(f"{what} not ready after {START_TIMEOUT:.0f} s\n{tails}")


def _memory_mb() -> int:
    """What the node offers jobs: the machine's memory less 1 GiB for the daemons."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(total - 1024, 512)


class Cluster:
    """A one-node cluster in `root`: `env` is the environment its commands read (SLURM_CONF)."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.node = socket.gethostname()
        self.cpus = os.cpu_count() or 1

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.root / OWN_FOLDER.get(daemon, "run") / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        return self.root / OWN_FOLDER.get(daemon, "log") / f"{daemon}.log"

    def start(self) -> None:
        for sub in ("etc", "run", "log", "spool", "state", "munge", "mysql"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # munged and mariadbd, as their own users, reach their folders
        ctld, slurmd, dbd, mysql = free_ports(4)
        self._munge()
        self._mariadb(mysql)
        self._write_conf(ctld, slurmd, dbd, mysql)
        self.start_accounting()
        run_checked(["sacctmgr", "-i", "add", "cluster", CLUSTER], "sacctmgr add cluster",
                    env=self.env)
        run_checked(["slurmctld"], "slurmctld", env=self.env)
        run_checked(["slurmd"], "slurmd", env=self.env)
        _wait("the node", self._idle, [self.log("slurmctld"), self.log("slurmd")])

    def start_accounting(self) -> None:
        """slurmdbd, once it answers sacctmgr (again, after `stop_daemon("slurmdbd")`)."""
        run_checked(["slurmdbd"], "slurmdbd", env=self.env)
        _wait("slurmdbd", lambda: subprocess.run(
            ["sacctmgr", "-n", "list", "cluster"], env=self.env, capture_output=True,
            check=False).returncode == 0, [self.log("slurmdbd")])

    def _munge(self) -> None:
        """munged on the socket SLURM's commands ask (the machine's own, when one answers there:
        used, not stopped; SLURM 22.05's accounting connections ignore `AuthInfo`'s socket)."""
        if _munge_answers():
            return
        folder = self.root / "munge"
        shutil.chown(folder, "munge", "munge")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        run_checked(["runuser", "-u", "munge", "--", "munged",
                     f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log('munged')}",
                     f"--seed-file={folder / 'munged.seed'}"], "munged")
        _wait("munged", _munge_answers, [self.log("munged")])

    def _mariadb(self, port: int) -> None:
        data = self.root / "mysql"
        shutil.chown(data, "mysql", "mysql")
        sock = self.root / "run" / "mysql.sock"
        run_checked(["mariadb-install-db", "--user=mysql", f"--datadir={data}", "--skip-test-db",
                     "--auth-root-authentication-method=socket"], "mariadb-install-db")
        (self.root / "run").chmod(0o777)  # mariadbd (as mysql) writes its socket and pid there
        with open(self.log("mariadb"), "ab") as log:
            subprocess.Popen(["mariadbd", "--user=mysql", f"--datadir={data}", f"--port={port}",
                              "--bind-address=127.0.0.1", f"--socket={sock}",
                              f"--pid-file={self.pid_file('mariadb')}"],
                             stdout=log, stderr=log, start_new_session=True)
        client = ["mariadb", f"--socket={sock}", "-u", "root"]
        _wait("MariaDB", lambda: subprocess.run([*client, "-e", "select 1"], capture_output=True,
                                                check=False).returncode == 0,
              [self.log("mariadb")])
        run_checked([*client, "-e",
                     "create database if not exists slurm_acct_db; "
                     f"create user if not exists 'slurm'@'127.0.0.1' identified by "
                     f"'{DB_PASSWORD}'; grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';"],
                    "MariaDB set-up")

    def _write_conf(self, ctld: int, slurmd: int, dbd: int, mysql: int) -> None:
        r = self.root
        settings = [
            f"ClusterName={CLUSTER}", f"SlurmctldHost={self.node}", f"SlurmctldPort={ctld}",
            f"SlurmdPort={slurmd}", "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SwitchType=switch/none", "MpiDefault=none", "SlurmUser=root",
            f"SlurmctldPidFile={self.pid_file('slurmctld')}",
            f"SlurmdPidFile={self.pid_file('slurmd')}", f"SlurmdSpoolDir={r / 'spool'}",
            f"StateSaveLocation={r / 'state'}", f"SlurmctldLogFile={self.log('slurmctld')}",
            f"SlurmdLogFile={self.log('slurmd')}", "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=5",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost", f"AccountingStoragePort={dbd}",
            "ReturnToService=2", "KillWait=5", "MinJobAge=60", "AuthInfo=cred_expire=10",
            f"NodeName={self.node} CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(settings) + "\n")
        dbd_conf = self.conf.with_name("slurmdbd.conf")
        dbd_conf.write_text("\n".join([
            "AuthType=auth/munge", "DbdHost=localhost", f"DbdPort={dbd}",
            "SlurmUser=root", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={mysql}", "StorageUser=slurm", f"StoragePass={DB_PASSWORD}",
            "StorageLoc=slurm_acct_db", f"PidFile={self.pid_file('slurmdbd')}",
            f"LogFile={self.log('slurmdbd')}"]) + "\n")
        dbd_conf.chmod(0o600)

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                              capture_output=True, text=True, check=False)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def stop(self) -> None:
        """Every daemon stopped by the pid it recorded (SIGTERM, then SIGKILL)."""
        for daemon in DAEMONS:
            self.stop_daemon(daemon)

    def stop_daemon(self, daemon: str) -> None:
        """One daemon stopped by the pid it recorded, if it runs."""
        try:
            pid = int(self.pid_file(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if not _alive(pid):
                return


def _munge_answers() -> bool:
    """Whether a munged answers on the default socket (a credential made and read back)."""
    made = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    return made.returncode == 0 and subprocess.run(
        ["unmunge"], input=made.stdout, capture_output=True, check=False).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


@contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """A running one-node cluster that exists only inside this block (the packages installed
    for it where a root CI machine lacks them, else the test is skipped)."""
    missing = f"SLURM with accounting ({', '.join(PROGRAMS)}) not found on PATH"
    with provided(PACKAGES, _programs, missing):
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="bench-slurm-")))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """`up` or `down` the cluster kept in BENCH_SLURM_DIR, for trying bench on it by hand."""
    root = Path(os.environ.get("BENCH_SLURM_DIR", "/tmp/headless-bench-slurm"))
    cluster = Cluster(root)
    if argv[1:] == ["down"]:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        print(f"stopped the cluster in {root}")
        return 0
    if argv[1:] != ["up"]:
        print("usage: slurm_cluster.py up|down", file=sys.stderr)
        return 2
    if _programs() is None:
        print(f"install Debian's {' '.join(PACKAGES)} first (apt-get install -y "
              f"--no-install-recommends {' '.join(PACKAGES)})", file=sys.stderr)
        return 2
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    print(f"a one-node cluster is up in {root}:\n  export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
