"""A throwaway PostgreSQL server for tests in which several processes share one database.

SQLite cannot stand in for an Optuna study that several worker processes write at once, so those
tests need a real server. This module starts a private cluster in a temporary directory, on a
free loopback port, and removes it afterwards. A system-wide cluster is never touched: no service
is started or stopped and `pg_ctlcluster` is not used.

Binaries come from Debian's versioned directory (`/usr/lib/postgresql/<major>/bin`, the highest
major) or else PATH. Where there are none, a root CI machine installs Debian's `postgresql`
package for the test session and purges everything that install added afterwards; anywhere else
the tests that need the server are skipped.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.debian_packages import provided
from support.processes import free_ports, run_checked

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
USER = DATABASE = "bench"


def find_bin_dir(debian_root: Path = DEBIAN_ROOT) -> Path | None:
    """The directory holding all the server programs: the highest Debian major, else PATH's.

    Debian's versioned directory comes first because a PATH entry may be a wrapper that needs a
    system cluster; majors compare as numbers so that 16 beats 9."""
    majors = [d for d in debian_root.glob("*/bin") if d.parent.name.isdigit() and _complete(d)]
    if majors:
        return max(majors, key=lambda d: int(d.parent.name))
    initdb = shutil.which("initdb")
    if initdb is None:
        return None
    bin_dir = Path(initdb).resolve().parent  # pg_ctl finds postgres beside its real path
    return bin_dir if _complete(bin_dir) else None


def _complete(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in SERVER_PROGRAMS)


@contextmanager
def server_binaries() -> Iterator[Path]:
    """The server's bin directory, installed for the duration where a root CI machine lacks it."""
    missing = ("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under "
               f"{DEBIAN_ROOT}/<major>/bin or on PATH")
    with provided("postgresql", find_bin_dir, missing) as bin_dir:
        yield bin_dir


def _server_user() -> str | None:
    """Who runs the server: initdb and postgres refuse root, so root hands them to a system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return "nobody"


@contextmanager
def running_cluster(bin_dir: Path) -> Iterator[str]:
    """A fresh cluster with database `bench`, trusted user `bench`, on 127.0.0.1 only.

    Yields its SQLAlchemy URL; the server is stopped and its directory removed on exit, even
    when starting it failed."""
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data, log, port = root / "data", root / "server.log", free_ports(1)[0]
    user = _server_user()
    as_user = ["runuser", "-u", user, "--"] if user else []
    if user:
        shutil.chown(root, user)
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        run_checked([*as_user, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust",
                     f"--username={USER}", "--encoding=UTF8"], "initdb", cwd=root)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
        try:
            run_checked([*pg_ctl, "-l", str(log), "-w", "-o", options, "start"], "pg_ctl start",
                        cwd=root)
        except RuntimeError as error:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{error}\nserver log {log}:\n{tail}") from None
        run_checked([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER,
                     DATABASE], "createdb")
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        subprocess.run([*pg_ctl, "stop", "-m", "immediate"], cwd=root, capture_output=True,
                       check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a private PostgreSQL server that exists only inside this block."""
    with server_binaries() as bin_dir, running_cluster(bin_dir) as url:
        yield url
