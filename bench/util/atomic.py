"""Whole-or-nothing writes: every file and folder the harness produces appears complete or not at
all, so a crash or a kill never leaves something half-written that a later step would trust.

Work in progress lives beside its target under a hidden temporary name, `.<name>.<random>.tmp`
(a file for `write_via`, a folder for `build_dir`). A process killed mid-write leaves it behind;
`remove_stale_temporaries` clears such leftovers once nothing has touched them for a while.

Nothing a run writes leaves its folder, even where others who share the results folder planted
symbolic links in it. A file written whole (`write_via`, `build_dir`), appended to
(`open_append`) or touched (`touch`) replaces a link at its path instead of following it; a
folder a run enters (`enter_dir`) and a file it reads back (`open_read`) are refused when they
are links (`LinkRefused`, naming the path). The folders above the one a caller starts from are
the caller's: a results folder may well sit behind a link.
"""

import errno
import fcntl
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from bench.util.paths import file_kind
from bench.util.signals import WRITE_HELD, signals_held

# `tempfile` names: the prefix given below, 8 random characters, the suffix.
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
# A live writer touches its temporary continuously (torch.save, a folder being filled); one left
# alone this long belongs to a process that died.
STALE_AFTER_S = 600.0
_SUFFIX = ".tmp"
class LinkRefused(OSError):
    """A symbolic link where a run reads or writes: following it could read or write outside
    the run's folder."""

    def __init__(self, path: Path) -> None:
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:  # removed meanwhile
            target = ""
        super().__init__(errno.ELOOP, f"{path} is a symbolic link{target}: refused, a run reads "
                         "and writes only inside its own folder; remove the link", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


class NotAFile(OSError):
    """Something other than a regular file where a file is read (a FIFO, a device, a folder)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.kind = kind
        super().__init__(errno.EINVAL, f"{path} is {kind}, not a regular file", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


def no_links(top: Path, path: Path) -> Path:
    """`path`, once nothing on the way to it below `top` (each folder after `top`, and `path`
    itself) is found to be a symbolic link (LinkRefused names the first). Missing parts pass:
    what creates them makes real ones."""
    part = top
    for name in path.relative_to(top).parts:
        part = part / name
        if part.is_symlink():
            raise LinkRefused(part)
    return path


def enter_dir(path: Path, *names: str) -> Path:
    """The folder `path`/`names`..., created where missing; a link among them is refused (see
    `no_links`) rather than followed out of the folder."""
    folder = no_links(path.parent, path.joinpath(*names))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_append(path: Path, encoding: str | None = None) -> io.TextIOWrapper:
    """`path` opened for appending text, created when missing; a link there is first replaced
    by an empty file (atomically), never appended through, so the file opened is the folder's
    own."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    for replaced in (False, True):
        try:
            fd = os.open(path, flags, 0o644)
            break
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            if replaced:  # planted again meanwhile
                raise LinkRefused(path) from None
        write_text(path, "")
    return os.fdopen(fd, "a", encoding=encoding)


def touch(path: Path) -> None:
    """Set `path`'s modification time to now, creating it empty when missing; a link there is
    replaced by an empty file, so neither a target nor a dangling link's target is touched."""
    with open_append(path) as f:
        os.utime(f.fileno())


def open_read(path: Path, follow: bool = False) -> BinaryIO:
    """`path` opened for reading. Unless `follow`, LinkRefused when it is a symbolic link: what
    a run reads back to decide how to go on must be its own. NotAFile when it is a FIFO, a
    device or a folder: opening a FIFO with no writer, or reading one, would wait for ever."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise LinkRefused(path) from None
        raise
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotAFile(path, kind)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def write_via(path: Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)` on a temporary file beside `path`, then rename it to `path`: a link at
    `path` is replaced, never written through (the folder it is in is the caller's: see
    `enter_dir`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        with signals_held(WRITE_HELD):
            write(tmp)
            tmp.chmod(0o644)
            os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file
            e.filename = str(path)
        raise


def write_text(path: Path, text: str) -> None:
    write_via(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path: Path, previous: Path | None = None) -> None:
    """`torch.save` whole-or-nothing; with `previous`, the file it replaces is kept there, so a
    good checkpoint is on disk at every instant even if the new one is later found damaged."""
    import torch

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # through Python's file: a full disk is an OSError (ENOSPC)
            torch.save(obj, f)
        if previous is not None and path.exists() and not path.is_symlink():  # a link: replaced
            os.replace(path, previous)

    write_via(path, save)


def build_dir(final: Path, build: Callable[[Path], object]) -> None:
    """Run `build(tmp_dir)` and move the folder to `final`; a concurrent winner (a folder) is
    kept, a link at `final` is replaced: what ends up at `final` is always a real folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=_SUFFIX, dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; what it becomes is not
    try:
        build(tmp)
        if final.is_symlink():  # a folder cannot be renamed over a link; the link goes
            final.unlink()
        os.replace(tmp, final)
    except OSError:
        if final.is_symlink() or not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_touched(path: Path) -> float:
    """Latest modification time of `path` or, for a folder, of anything inside it."""
    latest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                latest = max(latest, (Path(root) / name).lstat().st_mtime)
    return latest


# What flock raises where the file system keeps no such locks (an NFS mount without lockd, a
# Lustre mount without -o flock).
_NO_LOCKS = (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


@contextmanager
def one_at_a_time(lock: Path, waiting: Callable[[], None]) -> Iterator[bool]:
    """Hold an exclusive advisory lock (flock) on the file `lock` (created, never followed
    through a link) for the block, so that processes sharing a folder do its work one at a
    time; `waiting` is called once when another process holds it. Yields False where the file
    system keeps no locks: the block then runs unguarded. A killed holder's lock is released
    by the kernel, so none is ever stale."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    try:
        yield _flock(fd, waiting)
    finally:
        os.close(fd)  # releases the lock


def _flock(fd: int, waiting: Callable[[], None]) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        waiting()
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return False
        raise
    return True


def remove_stale_temporaries(folder: Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporaries that `write_via` and `build_dir` left in `folder` (not below it)
    when their process was killed, i.e. those untouched for `stale_after_s` seconds; other
    names are never touched. Returns what was removed."""
    if not folder.is_dir():
        return []
    cutoff = time.time() - stale_after_s
    removed = []
    for path in folder.iterdir():
        if not _TEMPORARY.fullmatch(path.name):
            continue
        try:
            if _last_touched(path) > cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # its writer finished or another cleaner was first
            continue
        removed.append(path)
    return removed
