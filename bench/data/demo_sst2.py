"""The offline SST-2-style set: human-rated movie-review sentences binarised by valence and written
in the official GLUE SST-2 layout, so that the GLUE loader reads it unchanged. It is a PROXY for
SST-2, not SST-2.

Source: the vaderSentiment 3.3.2 sdist (never installed), whose
additional_resources/hutto_ICWSM_2014.tar.gz holds movieReviewSnippets_GroundTruth.txt: CRLF
lines `id<TAB>valence<TAB>sentence`, valence the mean of 20+ human ratings on -4..+4. The
sentences are Rotten Tomatoes review snippets from Pang and Lee's reviews, SST's own source.
Both archives are read in memory; nothing is extracted.

Choices:
- label 1 if valence > 0, 0 if valence < 0; valence exactly 0 is dropped, as SST-2 drops its
  neutral sentences;
- whitespace runs inside a sentence (the source uses runs of spaces for dashes) become one
  space, so no sentence holds a tab or line break; the text is otherwise kept as written (SST-2
  is lower-cased and tokenised; this set is not);
- a sentence that occurs again keeps its first occurrence only, so no sentence is in both splits;
- dev = the DEV_SIZE sentences with the smallest SHA-256 of their UTF-8 bytes (SST-2's dev set
  has 872), the rest train; each split keeps the source's order. The hash, not the position,
  decides, so dev draws from the whole file rather than from one stretch of it;
- TSV lines are `sentence<TAB>label`, "\\n"-terminated UTF-8, no quoting (GLUE files are read
  with quoting off; one sentence holds a double quote).

The build is deterministic and idempotent: manifest.json is written last, atomically, with every
file's hash, so a folder without a valid manifest is a half-built one and is rebuilt.
"""

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bench.data.manifest import file_entries, matches_manifest, sha256_bytes, write_build
from bench.data.sources import VADER, fetch, read_member
from bench.errors import UserError
from bench.util.paths import cache_home

# Bump when the output changes, so that existing builds are redone.
BUILD_FORMAT = 1
NAME = "demo-sst2"
DEV_SIZE = 872
INNER_ARCHIVE = f"{VADER.name}-{VADER.version}/additional_resources/hutto_ICWSM_2014.tar.gz"
GROUND_TRUTH = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
HEADER = "sentence\tlabel\n"
SPLITS = {"train": "SST-2/train.tsv", "dev": "SST-2/dev.tsv"}
FILES = (*SPLITS.values(), "SOURCES.md")
RULE = "label 1 if the mean valence > 0, 0 if < 0; sentences with valence exactly 0 are dropped"


@dataclass(frozen=True)
class Rated:
    """One ground-truth row: the snippet's mean human valence and its text as written."""

    valence: float
    sentence: str


def read_ground_truth(sdist: Path) -> list[Rated]:
    """The movie-review rows of the sdist's inner tarball, in file order."""
    with tarfile.open(sdist, "r:gz") as outer:
        handle = outer.extractfile(INNER_ARCHIVE)
        if handle is None:
            raise UserError(f"{sdist}: {INNER_ARCHIVE} is not a regular file")
        with tarfile.open(fileobj=io.BytesIO(handle.read()), mode="r:gz") as inner:
            text = read_member(inner, inner.getmember(GROUND_TRUTH))
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        problem = UserError(f"{sdist}: {GROUND_TRUTH} line {number}: expected "
                            "'id<TAB>valence in -4..4<TAB>sentence'")
        try:
            _, value, sentence = line.split("\t", 2)
            valence = float(value)
        except ValueError as error:
            raise problem from error
        if not -4 <= valence <= 4 or not sentence.strip():
            raise problem
        rows.append(Rated(valence, sentence))
    return rows


def label_sentences(rows: list[Rated]) -> list[tuple[str, int]]:
    """(sentence, label) by RULE, whitespace collapsed, first occurrence of each sentence."""
    labelled: dict[str, int] = {}
    for row in rows:
        if row.valence == 0:
            continue
        sentence = " ".join(row.sentence.split())
        labelled.setdefault(sentence, int(row.valence > 0))
    return list(labelled.items())


def split_dev(examples: list[tuple[str, int]]) -> dict[str, list[tuple[str, int]]]:
    """Train and dev in source order; dev = the DEV_SIZE smallest SHA-256s of the sentence."""
    ranked = sorted(examples, key=lambda example: sha256_bytes(example[0].encode("utf-8")))
    dev = {sentence for sentence, _ in ranked[:DEV_SIZE]}
    return {
        "train": [example for example in examples if example[0] not in dev],
        "dev": [example for example in examples if example[0] in dev],
    }


def is_complete(out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished build of this format with every file intact."""
    return matches_manifest(out_dir, BUILD_FORMAT, FILES)


def build_demo_sst2(out_dir: Path | None = None, downloads: Path | None = None) -> Path:
    """Build the set into `out_dir` (default $BENCH_DATA/demo-sst2) unless already built."""
    out_dir = Path(out_dir) if out_dir is not None else cache_home() / NAME
    if is_complete(out_dir):
        return out_dir
    downloads = Path(downloads) if downloads is not None else cache_home() / "downloads"
    rows = read_ground_truth(fetch(VADER, downloads))
    examples = label_sentences(rows)
    splits = split_dev(examples)
    neutral = sum(row.valence == 0 for row in rows)
    counts = {
        split: {"examples": len(examples),
                "label_0": sum(label == 0 for _, label in examples),
                "label_1": sum(label == 1 for _, label in examples)}
        for split, examples in splits.items()
    }
    summary = {
        "format": BUILD_FORMAT,
        "name": NAME,
        "proxy_for": "GLUE SST-2 (its file layout and binary task); this is NOT SST-2",
        "source": {
            "package": VADER.name,
            "version": VADER.version,
            "archive": VADER.filename,
            "sha256": VADER.sha256,
            "licence": VADER.licence,
            "content": VADER.content,
            "rows": len(rows),
            "neutral_dropped": neutral,
            "repeats_dropped": len(rows) - neutral - len(examples),
        },
        "rule": RULE,
        "dev": f"the {DEV_SIZE} sentences with the smallest SHA-256 of their UTF-8 bytes",
        "splits": counts,
    }
    contents = {SPLITS[split]: _tsv(examples) for split, examples in splits.items()}
    contents["SOURCES.md"] = _sources_md(summary)
    write_build(out_dir, contents, {**summary, "files": file_entries(contents)})
    return out_dir


def _tsv(examples: list[tuple[str, int]]) -> str:
    return HEADER + "".join(f"{sentence}\t{label}\n" for sentence, label in examples)


def _sources_md(summary: dict) -> str:
    source, splits = summary["source"], summary["splits"]
    lines = [
        "# demo-sst2: where this data set comes from",
        "",
        "This is a PROXY for SST-2, not SST-2: sentences rated by people for sentiment,",
        "binarised and written in GLUE's SST-2 layout so that the same loader and metric apply.",
        "Scores on it must be reported as proxy scores, never as SST-2 results.",
        "",
        f"- package: {source['package']} {source['version']} (sdist `{source['archive']}`, "
        f"SHA-256 `{source['sha256']}`), downloaded with pip, never installed",
        f"- licence: {source['licence']}",
        f"- taken: {source['content']} ({source['rows']} rows)",
        f"- labels: {summary['rule']} ({source['neutral_dropped']} dropped); whitespace runs "
        "collapsed to one space; a repeated sentence kept once, its first occurrence "
        f"({source['repeats_dropped']} repeats dropped)",
        f"- dev: {summary['dev']}; train: the rest; no sentence is in both",
        "",
        "| file | examples | label 0 | label 1 |",
        "|---|---|---|---|",
    ]
    for split, path in SPLITS.items():
        c = splits[split]
        lines.append(f"| `{path}` | {c['examples']} | {c['label_0']} | {c['label_1']} |")
    lines.append("")
    return "\n".join(lines)
