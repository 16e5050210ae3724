"""Where bench keeps its cache (`cache_home`), what a path names (`file_kind`), and where bench
may write: the nearest folder that exists on a path, whether a new file can be created in it,
and an output path checked before any work is done (the results folder, a report's folder, an
evaluator's --json and --plot files, job records)."""

import os
import stat
import tempfile
from pathlib import Path

from bench.errors import UserError


def cache_home() -> Path:
    """Where fetched archives, built datasets, token shards and the fingerprint cache live:
    $BENCH_DATA or ~/.cache/headless-bench."""
    return Path(os.environ.get("BENCH_DATA") or "~/.cache/headless-bench").expanduser()


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    if stat.S_ISREG(mode):
        return None
    return next((word for test, word in kinds if test(mode)), "a special file")


def nearest_existing(path: Path) -> Path:
    """`path`, else the nearest folder above it that exists (the current folder when none
    does)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def try_create_in(folder: Path) -> None:
    """Create a file in `folder` and remove it: an OSError says why a new file cannot go there
    (which permission bits alone do not tell: a read-only mount, root on a squashed one)."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def writable_output(path: str | Path, label: str, folder: bool = False) -> Path:
    """`path` checked as an output before any work is done: what is there must be a regular
    file (a folder, with `folder`), and the nearest existing folder on its way must take a new
    file; otherwise a UserError naming `label` (the option, such as --json) and the path."""
    path = Path(path)
    try:
        kind = file_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        kind = "missing"
    except OSError as e:
        raise UserError(f"{label} {path}: cannot use it ({e.strerror or e})") from None
    wanted = "a directory" if folder else None
    if kind not in ("missing", wanted):
        raise UserError(f"{label} {path}: is {kind or 'a file'}; expected "
                        f"{'a folder to write into' if folder else 'a file to write'}")
    there = nearest_existing(path if folder else path.parent)
    if not there.is_dir():
        raise UserError(f"{label} {path}: {there} is not a folder")
    try:
        try_create_in(there)
    except OSError as e:
        raise UserError(f"{label} {path}: cannot write in {there} ({e.strerror or e})") from None
    return path


# What a results folder that is not one is told.
RESULTS_HINT = "; the results folder is given by --results or $BENCH_RESULTS"


def check_folder(path: Path, hint: str) -> Path:
    """`path`; a file where folder `path`, or a folder above it, belongs is a UserError naming it
    (with `hint`, what the folder is)."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise UserError(f"{path}: not a folder{where}{hint}")
    return path
