"""The manifest of a built data set: manifest.json lists every file with its SHA-256 and size.

It is written last, so a folder whose files do not match its manifest (or that has none) is a
half-built or damaged build, and the builder redoes it rather than trusting it.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.util.atomic import write_text

MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks so that a large archive is never held whole."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(contents: Mapping[str, str | bytes]) -> dict[str, dict[str, object]]:
    """The manifest's `files` table, in the order of `contents`: each file's SHA-256 and size.

    Text counts as its UTF-8 bytes, which is what `write_text` puts on disk.
    """
    entries = {}
    for name, data in contents.items():
        raw = data.encode("utf-8") if isinstance(data, str) else data
        entries[name] = {"sha256": sha256_bytes(raw), "bytes": len(raw)}
    return entries


def read_manifest(out_dir: Path) -> Any:
    """The parsed manifest.json of `out_dir`; OSError or ValueError when it is missing or bad."""
    return json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))


def matches_manifest(out_dir: Path, build_format: int, files: Iterable[str] | None = None,
                     **expected: object) -> bool:
    """Whether `out_dir` holds a finished build: its manifest has `build_format` and the
    `expected` top-level values, and each of `files` (default: every file the manifest lists)
    has the SHA-256 recorded there."""
    try:
        manifest = read_manifest(out_dir)
        listed = manifest["files"]
        return (manifest["format"] == build_format
                and isinstance(listed, dict)
                and all(manifest[key] == value for key, value in expected.items())
                and all(sha256_file(out_dir / name) == listed[name]["sha256"]
                        for name in (listed if files is None else files)))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_build(out_dir: Path, contents: Mapping[str, str], manifest: Mapping[str, object]) -> None:
    """Write each text file atomically, then `manifest` as manifest.json (2-space JSON) last.

    The old manifest goes first, so a build cut short leaves a folder that reads as unfinished.
    """
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for name, text in contents.items():
        write_text(out_dir / name, text)
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
