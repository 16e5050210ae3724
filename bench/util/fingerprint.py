"""Content fingerprints of a run's inputs, cheap enough to recheck at every `bench run`.

A file's fingerprint is the SHA-256 of its bytes. It is computed once and cached under the data
cache (`fingerprints.sqlite`), keyed by the file's device, inode, size and modification time in
nanoseconds; later checks cost one `stat` per file, so a 66 GB corpus is read once (about a
minute per 10 GB on one core), not at every plan. Trusting size and mtime is what make, rsync and
git's index do: any write, truncation or replacement of the file changes them. Only an edit that
keeps the size and then resets the nanosecond mtime on purpose would go unseen;
`BENCH_REHASH=1` ignores the cache. A directory's fingerprint is the SHA-256 over the relative
names and fingerprints of the regular files below it, in sorted order. An input is a regular file
or a folder: a FIFO, device or socket is refused (reading one blocks or never ends).

Files the harness writes itself (token shards) record the digest computed while writing
(`remember_digest`) and are checked later against what their build recorded (`cached_digest`,
`hash_file`), so an unchanged file costs a `stat` and a changed one is read again.
"""

import hashlib
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from bench.errors import UserError
from bench.util.paths import file_kind

MISSING = "missing"
BLOCK = 1 << 20  # bytes read at once while hashing
CACHE_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
  path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
  sha256 TEXT)"""


class DigestCache:
    """The stat-keyed digest cache; a cache that cannot be written only makes hashing slower."""

    def __init__(self, cache_dir: Path | None):
        from bench.util.paths import cache_home

        self.con: sqlite3.Connection | None = None
        if os.environ.get("BENCH_REHASH") == "1":
            return
        path = (cache_home() if cache_dir is None else cache_dir) / "fingerprints.sqlite"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(path, timeout=30)
            self.con.execute(CACHE_SCHEMA)
        except (OSError, sqlite3.Error):  # a cache folder that cannot be made or written
            self.con = None

    def get(self, key: tuple) -> str | None:
        if self.con is None:
            return None
        try:
            row = self.con.execute(
                "SELECT sha256 FROM files WHERE path=? AND dev=? AND ino=? AND size=? "
                "AND mtime_ns=?", key).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def put(self, key: tuple, digest: str) -> None:
        if self.con is None:
            return
        try:
            with self.con:
                self.con.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?)",
                                 (*key, digest))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def _key(path: Path, st: os.stat_result) -> tuple:
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def cached_digest(path: Path, cache: DigestCache) -> str | None:
    """The digest recorded for the file as it is now (one `stat`); None if it changed since."""
    return cache.get(_key(path, path.stat()))


def hash_file(path: Path, cache: DigestCache,
              scan: Callable[[bytes, int], None] | None = None) -> str:
    """Read the file in 1 MiB blocks and record its SHA-256; `scan(block, offset)` sees each
    block (and may raise), so a content check costs no second read."""
    st = path.stat()
    digest = hashlib.sha256()
    offset = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            if scan is not None:
                scan(block, offset)
            digest.update(block)
            offset += len(block)
    cache.put(_key(path, st), digest.hexdigest())
    return digest.hexdigest()


def remember_digest(path: Path, st: os.stat_result, digest: str, cache: DigestCache) -> None:
    """Record `digest`, computed while writing the file that had stat `st`, for that file once
    at `path` (renamed there whole, keeping its inode and mtime): no read to check it later."""
    cache.put(_key(path, st), digest)


def _file_digest(path: Path, cache: DigestCache) -> str:
    cached = cached_digest(path, cache)
    return cached if cached is not None else hash_file(path, cache)


def path_digest(path: Path, cache: DigestCache) -> str:
    """`fingerprint` of a file or folder through an open cache; a FIFO, device or socket is
    refused (reading one blocks or never ends)."""
    if path.is_file():
        return _file_digest(path, cache)
    if not path.is_dir():
        if path.exists():
            kind = file_kind(path.stat().st_mode)
            raise UserError(f"{path}: is {kind}; expected a regular file or a folder")
        return MISSING
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix().encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        digest.update(_file_digest(file, cache).encode())
    return digest.hexdigest()


def fingerprint(path: str | Path, cache_dir: Path | None = None) -> str:
    """SHA-256 of a file's bytes or of a directory's files; 'missing' where there is neither.

    `cache_dir` holds the digest cache (default: the data cache, $BENCH_DATA)."""
    cache = DigestCache(cache_dir)
    with closing(cache):
        return path_digest(Path(path), cache)


def fingerprint_inputs(inputs: dict[str, str], cache_dir: Path | None = None
                       ) -> dict[str, dict[str, str]]:
    """{label: {'path', 'sha256'}} for a run's declared inputs, labels as the family names them."""
    cache = DigestCache(cache_dir)
    with closing(cache):
        return {label: {"path": str(path), "sha256": path_digest(Path(path), cache)}
                for label, path in sorted(inputs.items())}


def missing(inputs: dict[str, dict[str, str]]) -> list[str]:
    """The labels of `inputs` (as `fingerprint_inputs` gives them) that are not there."""
    return [label for label, entry in inputs.items() if entry["sha256"] == MISSING]


def changed_inputs(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> list[str]:
    """Human-readable lines naming each input whose content (or presence) differs (where it
    lies is no part of a run's identity)."""
    lines = []
    for label in sorted(set(old) | set(new)):
        before, after = old.get(label), new.get(label)
        if before is None or after is None:
            entry = before or after
            assert entry is not None  # the label is one of the two's
            lines.append(f"{label} ({entry['path']}): "
                         f"{'added' if before is None else 'no longer an input'}")
        elif before["sha256"] != after["sha256"]:
            lines.append(f"{label} ({after['path']}): content changed "
                         f"(sha256 {before['sha256'][:12]} -> {after['sha256'][:12]})")
    return lines
