"""Tokenized corpora on disk: built once by parallel workers, read as rows through memory maps.

A build is a folder `shards-<fingerprint>` under the cache. The corpus is cut into chunks of about
CHUNK_BYTES of text (HF_CHUNK_ROWS rows of a saved dataset) that end at document boundaries; each
worker process tokenizes one chunk at a time, in sub-batches of about SUB_BATCH_CHARS characters,
and writes one shard folder: `tokens.bin` (the flat token stream: every document followed by the
layout's separator, eos for "causal", [SEP] for "mlm"; uint16 when the vocabulary fits in 65,535
ids, uint32 otherwise), `docs.idx` (int64 end offset of each document in it, as Megatron's indexed
dataset keeps), `unigram.npy` (the shard's token counts) and `shard.json` (its counts and the
SHA-256 of those three files, computed while writing). A worker's memory is bounded by a
sub-batch, the main process's by the chunk plan, never by the corpus: a document longer than
PIECE_CHARS is tokenized in pieces (`bench.text.data.piece_bounds`). Each shard folder is renamed
into place when complete, so a killed build resumes from its finished shards (a shard that fails
its check against its `shard.json` is tokenized again); `manifest.json`, written last, marks a
finished build, which is never rebuilt, and the temporaries of killed workers are removed then.

A finished build is checked whenever it is opened, before a run trains on it: the manifest (its
fields, shard names that are this build's own folders, splits inside the streams, and the SHA-256
of its own content), each file's size where the manifest fixes it, and each file's SHA-256
against the one recorded at build time. The digests go through the fingerprint cache
(`bench.util.fingerprint`), seeded by the workers as they write: an unchanged file costs a `stat`, a
changed one is read again (in 1 MiB blocks, its token ids checked below the vocabulary as they
are hashed) and refused. Anything amiss is an error naming the file and saying to delete the
build and build it again. A manifest written before digests were recorded gets them on its
first opening, after the same checks. The run's input `data.shards` stays the fingerprint of
everything the shards are made from (known before they exist, so at plan time); the checks bind
the files on disk to that build.

Rows are cut at read time, consecutively from the start of a split's token stream, the tail
dropped: "causal" rows are seq_len tokens; "mlm" rows are seq_len - 2 tokens framed [CLS] ... [SEP].
So the shards do not depend on seq_len. The held-out split is a separate `val` corpus, or the last
val_fraction of the documents (a cut in the stream at a document end).

A multilingual corpus (a folder of languages, see `bench.text.languages`) is one such build per
language, read as `MixedRows`: each step's global batch takes every language's fixed quota of
rows, from that language's own epoch permutations, so a step's rows stay a pure function of the
step.
"""

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeGuard, TypeVar

import numpy as np
import tokenizers
from pydantic import Field, StringConstraints, ValidationError

from bench.data.manifest import sha256_file
from bench.errors import UserError
from bench.schema import Int, Strict
from bench.text.config import DataConfig
from bench.text.data import (
    Corpus,
    bpe_folder,
    chunk_bounds,
    document_pieces,
    load_tokenizer,
    open_corpus,
    read_documents,
    saved_tokenizer,
)
from bench.text.languages import (
    is_multilingual,
    language_configs,
    language_quotas,
    language_seed,
    language_weights,
)
from bench.training.sampling import batch_indices, permute
from bench.util.atomic import (
    build_dir,
    one_at_a_time,
    remove_stale_temporaries,
    write_text,
    write_via,
)
from bench.util.fingerprint import (
    DigestCache,
    cached_digest,
    fingerprint,
    hash_file,
    path_digest,
    remember_digest,
)
from bench.util.paths import file_kind
from bench.util.progress import progress

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

# Bump when the shards' contents change for the same inputs and settings.
SHARDS_VERSION = 1
CACHE_SUBDIR = "lm-data"  # under the data cache: trained tokenizers and shard builds
CHUNK_BYTES = 48 << 20
HF_CHUNK_ROWS = 20_000
SUB_BATCH_CHARS = 1 << 20
WAIT_POLL_S = 5.0
UINT16_VOCAB = 65535  # vocabularies up to this size are stored as uint16
MANIFEST_FORMAT = 2  # manifests with the files' SHA-256 (earlier ones had none)
SHARD_FILES = ("tokens.bin", "docs.idx", "unigram.npy")  # a shard's data, each with its digest
BUILD_FILES = ("unigram.npy", "tokenizer")  # the build's own, beside the shards
NPY_MAGIC = b"\x93NUMPY"
# What a killed worker leaves (`build_dir`'s temporary of a shard folder).
_SHARD_TEMPORARY = re.compile(r"\.(train|val)-\d{5}\..+\.tmp")


# --- reading ---------------------------------------------------------------------------------


@dataclass
class TokenStream:
    """Shards' token files read as one stream; memory maps opened lazily, once per process."""

    files: list[str]
    lengths: list[int]
    dtype: str
    _maps: list[np.ndarray] = field(default_factory=list, repr=False)
    _pid: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        self._ends = np.cumsum(np.asarray(self.lengths, dtype=np.int64))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its maps: a worker or rank opens its own."""
        return {**self.__dict__, "_maps": [], "_pid": -1}

    def _open(self) -> list[np.ndarray]:
        if self._pid != os.getpid():
            self._maps = [np.memmap(f, dtype=self.dtype, mode="r") if n else
                          np.zeros(0, dtype=self.dtype) for f, n in zip(
                              self.files, self.lengths, strict=True)]
            self._pid = os.getpid()
        return self._maps

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream, across shard ends where needed."""
        maps, parts = self._open(), []
        shard = int(np.searchsorted(self._ends, start, side="right"))
        while length > 0:
            begin = start - (int(self._ends[shard - 1]) if shard else 0)
            piece = maps[shard][begin: begin + length]
            parts.append(piece)
            start, length, shard = start + len(piece), length - len(piece), shard + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass
class RowSource:
    """Rows of `row_len` tokens cut consecutively from tokens [first, first + tokens) of a
    stream (tail dropped), framed [CLS] row [SEP] when `frame` gives those ids."""

    stream: TokenStream
    first: int
    tokens: int
    row_len: int
    frame: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.tokens // self.row_len

    @property
    def seq_len(self) -> int:
        return self.row_len + (2 if self.frame else 0)

    def rows(self, indices: np.ndarray) -> "torch.Tensor":
        """Rows `indices` as an int64 tensor [len(indices), seq_len]; only they are read."""
        import torch

        n = len(self)
        out = np.empty((len(indices), self.seq_len), dtype=np.int64)
        inner = out[:, 1:-1] if self.frame else out
        for i, row in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
            if not 0 <= row < n:
                raise IndexError(f"row {row} of {n}")
            inner[i] = self.stream.read(self.first + row * self.row_len, self.row_len)
        if self.frame:
            out[:, 0], out[:, -1] = self.frame
        return torch.from_numpy(out)

    def step_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """The rows optimizer step `step` trains on (see
        `bench.training.sampling.batch_indices`)."""
        return batch_indices(len(self), step, batch_size, seed)


@dataclass
class MixedRows:
    """The rows of several languages as one index space (each language's rows in turn), read
    in batches that take every language's fixed quota."""

    parts: dict[str, RowSource]
    weights: dict[str, float]

    def __post_init__(self) -> None:
        self._starts = np.cumsum([0] + [len(p) for p in self.parts.values()])
        self._quotas: dict[int, dict[str, int]] = {}  # by batch size: constant per stage

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def seq_len(self) -> int:
        return next(iter(self.parts.values())).seq_len

    def rows(self, indices: np.ndarray) -> "torch.Tensor":
        """Rows `indices` of the joint index space, each read from its language's shards."""
        import torch

        indices = np.asarray(indices, dtype=np.int64)
        out = torch.empty((len(indices), self.seq_len), dtype=torch.long)
        which = np.searchsorted(self._starts, indices, side="right") - 1
        for i, part in enumerate(self.parts.values()):
            here = np.flatnonzero(which == i)
            if len(here):
                out[here] = part.rows(indices[here] - self._starts[i])
        return out

    def quotas(self, batch_size: int) -> dict[str, int]:
        """Each language's rows in a batch of `batch_size` (`language_quotas`, kept per size:
        asked at every step)."""
        if batch_size not in self._quotas:
            self._quotas[batch_size] = language_quotas(self.weights, batch_size)
        return self._quotas[batch_size]

    def step_indices(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        """Step `step`'s rows: language i's quota q_i read at its running count step x q_i of
        its own epoch order, the languages' rows then spread over the batch by a permutation
        keyed by (seed, step), so every micro-batch and process share sees a mix."""
        quotas = self.quotas(batch_size)
        picked = [self._starts[i] + batch_indices(len(part), step, quotas[name],
                                                  language_seed(seed, name))
                  for i, (name, part) in enumerate(self.parts.items())]
        joined = np.concatenate(picked)
        order = permute(np.arange(batch_size), batch_size, language_seed(seed, ""), step)
        return joined[order]


@dataclass
class LMData:
    """A finished build: train and val rows, the tokenizer that produced them, their counts and
    the fingerprint that identifies them (everything they were built from). A multilingual
    corpus's rows are `MixedRows` over its `languages`' builds."""

    tokenizer: "PreTrainedTokenizerFast"
    train: RowSource | MixedRows
    val: RowSource | MixedRows
    train_documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    fingerprint: str
    folder: Path
    languages: dict[str, "LMData"] = field(default_factory=dict)

    def unigram(self) -> np.ndarray:
        """How often each token id occurs in the training split (counted while building)."""
        if self.languages:
            return sum((d.unigram() for d in self.languages.values()),
                       np.zeros(len(self.tokenizer), dtype=np.int64))
        return np.load(self.folder / "unigram.npy")

    def sampling(self, batch_size: int) -> dict[str, dict[str, float]]:
        """Each language's training tokens, sampling weight and rows per batch (for the run's
        record); empty for a one-language corpus."""
        if not isinstance(self.train, MixedRows):
            return {}
        quotas = self.train.quotas(batch_size)
        return {n: {"tokens": d.train_tokens, "weight": self.train.weights[n],
                    "rows_per_batch": quotas[n]} for n, d in self.languages.items()}


def language_val_batches(rows: RowSource | MixedRows, batch_size: int, n: int
                         ) -> dict[str, list["torch.Tensor"]]:
    """Validation batches per language: ceil(n / languages) of each language's held-out rows
    (`val_batches`), so a multilingual validation costs about what a one-corpus one does; a
    one-corpus source is the single language ''."""
    if isinstance(rows, RowSource):
        return {"": val_batches(rows, batch_size, n)}
    each = -(-n // len(rows.parts))
    return {name: val_batches(part, batch_size, each) for name, part in rows.parts.items()}


B = TypeVar("B")  # a held-out batch as a family prepares it (token rows, masked rows)


def language_scores(batches: dict[str, list[B]], score: Callable[[B], dict[str, float]],
                    per_language: bool = False) -> dict[str, float]:
    """Each metric of `score` averaged over every held-out batch (of `language_val_batches`),
    and with `per_language` (and several languages) each language's own mean as
    `<lang>.<metric>`, from the same one pass over the batches."""
    scores = {name: [score(b) for b in part] for name, part in batches.items()}
    out = _mean([s for part in scores.values() for s in part])
    if per_language and len(scores) > 1:
        out |= {f"{name}.{k}": v for name, part in scores.items() for k, v in _mean(part).items()}
    return out


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}


def val_batches(rows: RowSource, batch_size: int, n: int) -> list["torch.Tensor"]:
    """The first `n` full batches of one corpus's rows in order (one smaller batch if rows are
    fewer); a multilingual source's come per language from `language_val_batches`.

    Fixed batches make validation losses comparable across steps and runs.
    """
    full = min(n, len(rows) // batch_size)
    if full == 0:
        return [rows.rows(np.arange(len(rows)))] if len(rows) else []
    return [rows.rows(np.arange(i * batch_size, (i + 1) * batch_size)) for i in range(full)]


# --- the build's identity --------------------------------------------------------------------


def corpus_key(cfg: DataConfig) -> str:
    """What identifies the training documents: the corpus's content fingerprint (SHA-256 read
    once, then trusted while the file's device, inode, size and mtime are unchanged), how it is
    read, and the held-out cut."""
    key = {"train": fingerprint(cfg.train), "format": cfg.format, "text_field": cfg.text_field,
           "val_fraction": cfg.val_fraction if cfg.val is None else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def shards_fingerprint(cfg: DataConfig, layout: str) -> str:
    """Hash of every input and setting the shards depend on (not seq_len: rows are cut at read
    time). Costs no reading beyond the cached content fingerprints. A multilingual corpus's is
    that of its languages' builds and its sampling."""
    if is_multilingual(cfg):
        return _joint_fingerprint(cfg, {n: shards_fingerprint(c, layout)
                                        for n, c in language_configs(cfg).items()})
    key = {
        "version": SHARDS_VERSION,
        "layout": layout,
        "tokenizers": tokenizers.__version__,
        "corpus": corpus_key(cfg),
        "val": fingerprint(cfg.val) if cfg.val is not None else None,
        "tokenizer": fingerprint(cfg.tokenizer.path) if cfg.tokenizer.path else None,
        "train_bpe": cfg.tokenizer.train_bpe,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def shards_input(cfg: DataConfig, layout: str) -> dict[str, dict[str, str]]:
    """The token shards as a run input: their fingerprint (corpus, tokenizer, settings, the
    tokenizers version) joins the run's identity, so no run resumes on other shards."""
    from bench.util.paths import cache_home

    if is_multilingual(cfg):
        return {f"data.shards.{n}": entry for n, c in language_configs(cfg).items()
                for entry in shards_input(c, layout).values()}
    key = shards_fingerprint(cfg, layout)
    return {"data.shards": {"path": str(cache_home() / CACHE_SUBDIR / f"shards-{key}"),
                            "sha256": key}}


# --- checking a build ------------------------------------------------------------------------

Count = Annotated[Int, Field(ge=0)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ShardRecord(Strict):
    """One shard as its worker recorded it (`shard.json`) and the manifest lists it."""

    name: str
    documents: Count
    tokens: Count
    sha256: dict[str, Sha256] | None = None  # None only in a manifest of format 1


class SplitRecord(Strict):
    """Where a split lies: tokens [first, first + tokens) of a stream, and its documents."""

    stream: Literal["train", "val"]
    first: Count
    tokens: Count
    documents: Count
    source: str


class Splits(Strict):
    train: SplitRecord
    val: SplitRecord


class Manifest(Strict):
    """`manifest.json`: the build's layout, streams of shards and splits; from format 2 on, the
    SHA-256 of every file and of the manifest's own content (`checksum`)."""

    format: Literal[2] | None = None  # None: format 1, written before digests were recorded
    layout: Literal["causal", "mlm"]
    dtype: Literal["uint16", "uint32"]
    vocab: Int = Field(gt=0)
    streams: dict[Literal["train", "val"], list[ShardRecord]]
    splits: Splits
    sha256: dict[str, Sha256] | None = None
    checksum: Sha256 | None = None


class ShardDamage(Exception):
    """A file of a build that is not what the build wrote: its path and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")


def _checksum(content: dict[str, Any]) -> str:
    """A manifest's own SHA-256: of its canonical JSON without the checksum."""
    rest = {k: v for k, v in content.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _own(path: Path, folder: bool = False) -> os.stat_result:
    """A build's own file (folder): there, not a link out of the build, of the right kind; its
    stat."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        raise ShardDamage(path, "missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise ShardDamage(path, "is a symbolic link; expected the build's own "
                          f"{'folder' if folder else 'file'}")
    kind = file_kind(st.st_mode)
    if kind != ("a directory" if folder else None):
        raise ShardDamage(path, f"is {kind or 'a file'}; expected "
                          f"{'a folder' if folder else 'a regular file'}")
    return st


def _read_record(path: Path) -> Any:
    """The JSON a build wrote at `path` (a manifest, a shard's record)."""
    _own(path)
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardDamage(path, f"not valid JSON ({error})") from None


def read_manifest(folder: Path, layout: str) -> Manifest:
    """A finished build's manifest, checked: its fields, its checksum, that every shard is a
    folder of this build (named as the build names them) and every split lies in its stream."""
    path = folder / "manifest.json"
    content = _read_record(path)
    try:
        manifest = Manifest.model_validate(content)
    except ValidationError as error:
        raise ShardDamage(path, _first_error(error)) from None
    if manifest.format is not None and manifest.checksum != _checksum(content):
        raise ShardDamage(path, "its content does not match its checksum (edited after the "
                          "build?)")
    if not _digests_as_format(manifest):
        raise ShardDamage(path, f"format {manifest.format or 1}; expected "
                          + ("the SHA-256 of " + ", ".join(BUILD_FILES) + " and of each shard's "
                             + ", ".join(SHARD_FILES) if manifest.format else "no digests"))
    if manifest.layout != layout:
        raise ShardDamage(path, f"layout {manifest.layout!r}; expected {layout!r}")
    if manifest.vocab - 1 > np.iinfo(manifest.dtype).max:
        raise ShardDamage(path, f"vocab {manifest.vocab} does not fit dtype {manifest.dtype}")
    _check_names(path, manifest)
    _check_splits(path, manifest)
    return manifest


def _check_names(path: Path, manifest: Manifest) -> None:
    """Shard i of a stream is the build's folder `<stream>-<i>`: never a path elsewhere."""
    for stream, shards in manifest.streams.items():
        for i, shard in enumerate(shards):
            if shard.name != _shard_name(stream, i):
                raise ShardDamage(path, f"streams.{stream}[{i}].name {shard.name!r}; expected "
                                  f"{_shard_name(stream, i)!r}, a shard folder of this build")


def _check_splits(path: Path, manifest: Manifest) -> None:
    """Each split lies inside a stream the manifest lists."""
    for name, split in (("train", manifest.splits.train), ("val", manifest.splits.val)):
        shards = manifest.streams.get(split.stream, [])
        if split.stream not in manifest.streams or \
                split.first + split.tokens > sum(s.tokens for s in shards) or \
                split.documents > sum(s.documents for s in shards):
            raise ShardDamage(path, f"splits.{name} ({split.tokens} tokens from {split.first}, "
                              f"{split.documents} documents) does not lie in stream "
                              f"{split.stream!r} as its shards count it")


def _digests_as_format(manifest: Manifest) -> bool:
    """Format 2 records every file's digest; format 1 none."""
    listed = [manifest.sha256] + [s.sha256 for shards in manifest.streams.values()
                                  for s in shards]
    if manifest.format is None:
        return all(digests is None for digests in listed)
    wanted = [set(BUILD_FILES)] + [set(SHARD_FILES)] * (len(listed) - 1)
    return all(set(d or ()) == w for d, w in zip(listed, wanted, strict=True))


def _check_build(folder: Path, manifest: Manifest, cache: DigestCache
                 ) -> tuple[dict[str, list[dict[str, str]]], dict[str, str]]:
    """Every file the manifest lists, checked against it; their digests (per shard, and the
    build's own), computed afresh for a manifest of format 1."""
    streams: dict[str, list[dict[str, str]]] = {
        stream: [_check_shard(folder / shard.name, shard, manifest.dtype, manifest.vocab, cache)
                 for shard in shards] for stream, shards in manifest.streams.items()}
    recorded = manifest.sha256 or {}
    counts = folder / "unigram.npy"
    train_tokens = manifest.splits.train.tokens
    own = {"unigram.npy": _verified(counts, recorded.get("unigram.npy"), cache,
                                    lambda: _check_counts(counts, manifest.vocab, train_tokens))}
    tokenizer = folder / "tokenizer"
    _own(tokenizer, folder=True)
    own["tokenizer"] = path_digest(tokenizer, cache)
    if recorded and own["tokenizer"] != recorded["tokenizer"]:
        raise ShardDamage(tokenizer, "changed since the build (its files' SHA-256 differs from "
                          "the one manifest.json records)")
    return streams, own


def _check_shard(shard: Path, record: ShardRecord, dtype: str, vocab: int, cache: DigestCache
                 ) -> dict[str, str]:
    """A shard folder of the build against its record (`_check_files`)."""
    _own(shard, folder=True)
    return _check_files(shard, record, dtype, vocab, cache)


def _check_files(shard: Path, record: ShardRecord, dtype: str, vocab: int, cache: DigestCache
                 ) -> dict[str, str]:
    """A shard's files against its record: sizes, digests (through the cache) and, when a file
    is read, its content: ids below `vocab`, document ends, token counts."""
    tokens, ends, counts = (shard / name for name in SHARD_FILES)
    size = record.tokens * np.dtype(dtype).itemsize
    recorded = record.sha256 or {}
    return {
        "tokens.bin": _verified(tokens, recorded.get("tokens.bin"), cache, None,
                                _id_scan(tokens, dtype, vocab),
                                (size, f"{record.tokens} {dtype} token ids")),
        "docs.idx": _verified(ends, recorded.get("docs.idx"), cache,
                              lambda: _check_ends(ends, record)),
        "unigram.npy": _verified(counts, recorded.get("unigram.npy"), cache,
                                 lambda: _check_counts(counts, vocab, record.tokens)),
    }


def _verified(path: Path, expected: str | None, cache: DigestCache,
              inspect: Callable[[], None] | None = None,
              scan: Callable[[bytes, int], None] | None = None,
              size: tuple[int, str] | None = None) -> str:
    """`path`'s SHA-256, equal to `expected` (None: not recorded yet), the file of `size`
    (its bytes, and what they hold in words) where one is given. A digest the cache holds for
    the file as it is now costs a stat; otherwise the file is read, `inspect`ed and `scan`ned
    as it is hashed."""
    found = _own(path).st_size
    if size is not None and found != size[0]:
        raise ShardDamage(path, f"{found} bytes; expected {size[0]} ({size[1]})")
    digest = cached_digest(path, cache) if expected is not None else None
    if digest is None:
        if inspect is not None:
            inspect()
        digest = hash_file(path, cache, scan)
    if expected is not None and digest != expected:
        raise ShardDamage(path, f"changed since the build (SHA-256 {digest[:12]}..., recorded "
                          f"{expected[:12]}...)")
    return digest


def _id_scan(path: Path, dtype: str, vocab: int) -> Callable[[bytes, int], None]:
    """A block check of a token file: every id below `vocab`."""
    itemsize = np.dtype(dtype).itemsize

    def scan(block: bytes, offset: int) -> None:
        ids = np.frombuffer(block, dtype=dtype, count=len(block) // itemsize)
        over = np.flatnonzero(ids >= vocab)
        if len(over):
            raise ShardDamage(path, f"token {offset // itemsize + int(over[0])} is id "
                              f"{int(ids[over[0]])}; expected ids below the vocabulary's {vocab}")
    return scan


def _array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An int64 array file of `shape`, mapped (a damaged header never allocates)."""
    with path.open("rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ShardDamage(path, "not a NumPy .npy file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError, TypeError, SyntaxError) as error:
        raise ShardDamage(path, f"not a readable NumPy .npy file ({error})") from None
    if array.dtype != np.int64 or array.shape != shape:
        raise ShardDamage(path, f"holds {array.dtype} of shape {array.shape}; expected int64 "
                          f"of shape {shape}")
    return array


def _check_ends(path: Path, record: ShardRecord) -> None:
    """docs.idx: one rising end per document, the last at the shard's last token."""
    ends = _array(path, (record.documents,))
    rising = not len(ends) or (ends[0] >= 1 and bool((np.diff(ends) >= 1).all()))
    if not rising or (int(ends[-1]) if len(ends) else 0) != record.tokens:
        raise ShardDamage(path, f"document ends do not rise to the shard's {record.tokens} "
                          "tokens, one document after another")


def _check_counts(path: Path, vocab: int, tokens: int) -> None:
    """A unigram file: a non-negative count per id, `tokens` in all."""
    counts = _array(path, (vocab,))
    if bool((counts < 0).any()) or int(counts.sum()) != tokens:
        raise ShardDamage(path, f"token counts that do not sum to {tokens}")


def _saved_tokenizer(folder: Path) -> "PreTrainedTokenizerFast":
    """The build's copy of its tokenizer."""
    try:
        return saved_tokenizer(folder)
    except Exception as error:  # transformers and tokenizers raise many types for bad files
        raise ShardDamage(folder, f"cannot be loaded as a tokenizer ({error})") from None


def _shard_record(shard: Path) -> ShardRecord:
    """A finished shard's `shard.json`, with its counts and files' digests."""
    path = shard / "shard.json"
    try:
        record = ShardRecord.model_validate(_read_record(path))
    except ValidationError as error:
        raise ShardDamage(path, _first_error(error)) from None
    if record.name != shard.name or set(record.sha256 or {}) != set(SHARD_FILES):
        raise ShardDamage(path, f"expected the record of shard {shard.name} with the SHA-256 "
                          f"of {', '.join(SHARD_FILES)}")
    return record


def _reusable(shard: Path, dtype: str, vocab: int, cache: DigestCache) -> ShardRecord | None:
    """The record of a shard a killed build left finished and intact; None where it left none
    (a damaged one is removed: its chunk is tokenized again)."""
    if not os.path.lexists(shard):
        return None
    try:
        _own(shard, folder=True)
        record = _shard_record(shard)
        _check_files(shard, record, dtype, vocab, cache)
        return record
    except ShardDamage as damage:
        print(f"{damage}; tokenizing its chunk again", file=sys.stderr, flush=True)
        _remove(shard)
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_manifest(folder: Path, content: dict[str, Any]) -> None:
    """`manifest.json` of the current format, sealed by its checksum."""
    content = {**content, "format": MANIFEST_FORMAT}
    write_text(folder / "manifest.json", json.dumps(content | {"checksum": _checksum(content)},
                                                    indent=1))


def _upgrade(folder: Path, manifest: Manifest, streams: dict[str, list[dict[str, str]]],
             own: dict[str, str]) -> None:
    """A format-1 manifest rewritten with the digests just computed, so later openings cost a
    stat per file; a build that cannot be written to stays as it is (and is read in full)."""
    content = manifest.model_dump(mode="json", exclude={"format", "checksum"})
    for stream, digests in streams.items():
        for shard, sha256 in zip(content["streams"][stream], digests, strict=True):
            shard["sha256"] = sha256
    with suppress(OSError):
        _write_manifest(folder, content | {"sha256": own})


# --- preparing -------------------------------------------------------------------------------


def prepare_lm_data(cfg: DataConfig, cache_dir: Path, layout: str = "causal",
                    workers: int | None = None, build: bool = True,
                    poll_s: float = WAIT_POLL_S) -> LMData:
    """The corpus's token shards, built on first use, opened as rows of `cfg.seq_len`.

    `workers` tokenizing processes (default: every core). With `build=False` (a process other
    than a run's main one) nothing is built: it waits, polling every `poll_s` seconds, until the
    finished build appears.
    """
    if layout == "mlm" and cfg.seq_len < 3:
        raise UserError(f"data.seq_len {cfg.seq_len}: a masked-LM row needs at least 3 "
                        "positions ([CLS], a token, [SEP])")
    if is_multilingual(cfg):
        languages = {n: prepare_lm_data(c, cache_dir, layout, workers, build, poll_s)
                     for n, c in language_configs(cfg).items()}
        return _mixed(cfg, languages, Path(cache_dir))
    key = shards_fingerprint(cfg, layout)
    folder = Path(cache_dir) / f"shards-{key}"
    try:
        if not os.path.lexists(folder / "manifest.json"):
            if build:  # one builder at a time: the jobs of an array share the cache
                with one_at_a_time(Path(cache_dir) / f".shards-{key}.lock",
                                   lambda: _say_waiting(folder, "another process")):
                    if not os.path.lexists(folder / "manifest.json"):  # else built meanwhile
                        build_shards(cfg, layout, folder, workers or os.cpu_count() or 1,
                                     Path(cache_dir))
            else:
                _wait_for(folder / "manifest.json", poll_s)
        return open_shards(folder, cfg, key, layout)
    except ShardDamage as damage:  # the file, the problem and what to do
        raise UserError(f"{damage}. The token shards in {folder} cannot be trusted: delete that "
                        "folder and build them again (`bench data tokenize SUITE`, or `bench "
                        "run`, which builds them on first use)") from None


def _joint_fingerprint(cfg: DataConfig, languages: dict[str, str]) -> str:
    """A multilingual corpus's fingerprint: its languages' builds' and its sampling."""
    key = {"languages": languages,
           "sampling": cfg.sampling.model_dump(mode="json") if cfg.sampling else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _mixed(cfg: DataConfig, languages: dict[str, LMData], cache_dir: Path) -> LMData:
    """The languages' builds as one: rows mixed by the languages' sampling weights."""
    weights = language_weights(cfg, {n: d.train_tokens for n, d in languages.items()})

    def total(what: str) -> int:
        return sum(getattr(d, what) for d in languages.values())

    return LMData(
        tokenizer=next(iter(languages.values())).tokenizer,
        train=MixedRows({n: _rows(d.train) for n, d in languages.items()}, weights),
        val=MixedRows({n: _rows(d.val) for n, d in languages.items()}, weights),
        train_documents=total("train_documents"), val_documents=total("val_documents"),
        train_tokens=total("train_tokens"), val_tokens=total("val_tokens"),
        fingerprint=_joint_fingerprint(cfg, {n: d.fingerprint for n, d in languages.items()}),
        folder=cache_dir, languages=languages)


def _rows(rows: RowSource | MixedRows) -> RowSource:
    assert isinstance(rows, RowSource)  # a language's own build is one corpus
    return rows


def _wait_for(manifest: Path, poll_s: float) -> None:
    _say_waiting(manifest.parent, "the main process")
    while not os.path.lexists(manifest):
        time.sleep(poll_s)


def _say_waiting(folder: Path, builder: str) -> None:
    print(f"waiting for {builder} to build the token shards {folder}", file=sys.stderr,
          flush=True)


def open_shards(folder: Path, cfg: DataConfig, key: str, layout: str) -> LMData:
    """A finished build's rows of `cfg.seq_len`, once every file is checked against the
    manifest (ShardDamage names one that is not as built; a UserError says when a split has
    not one row)."""
    manifest = read_manifest(folder, layout)
    with closing(DigestCache(None)) as cache:
        streams, own = _check_build(folder, manifest, cache)
    tokenizer = _saved_tokenizer(folder / "tokenizer")
    if len(tokenizer) != manifest.vocab:
        raise ShardDamage(folder / "manifest.json", f"vocab {manifest.vocab}; the build's "
                          f"tokenizer has {len(tokenizer)} ids")
    if manifest.format is None:
        _upgrade(folder, manifest, streams, own)
    mlm = manifest.layout == "mlm"
    frame = (tokenizer.cls_token_id, tokenizer.sep_token_id) if mlm else None
    row_len = cfg.seq_len - 2 if mlm else cfg.seq_len
    splits = {"train": manifest.splits.train, "val": manifest.splits.val}
    sources = {}
    for name, split in splits.items():
        shards = manifest.streams[split.stream]
        stream = TokenStream([str(folder / s.name / "tokens.bin") for s in shards],
                             [s.tokens for s in shards], manifest.dtype)
        sources[name] = RowSource(stream, split.first, split.tokens, row_len, frame)
        if not len(sources[name]):
            raise UserError(
                f"{split.source}: {split.documents} {name} documents give {split.tokens} "
                f"tokens, fewer than one row of seq_len {cfg.seq_len}; give more text or a "
                "shorter seq_len")
    return LMData(tokenizer=tokenizer, train=sources["train"], val=sources["val"],
                  train_documents=splits["train"].documents,
                  val_documents=splits["val"].documents,
                  train_tokens=splits["train"].tokens, val_tokens=splits["val"].tokens,
                  fingerprint=key, folder=folder)


@dataclass(frozen=True)
class ChunkTask:
    """One chunk for a worker: count its documents, or tokenize it into the shard `out`."""

    corpus: Corpus
    start: int
    stop: int
    out: str = ""
    tokenizer_file: str = ""
    separator: int = 0
    dtype: str = "uint16"
    vocab: int = 0


def build_shards(cfg: DataConfig, layout: str, folder: Path, workers: int,
                 cache_dir: Path) -> None:
    """Tokenize the corpus (and the val corpus) into shards under `folder`, resuming from the
    intact shards a killed build finished; the manifest is written last, then the temporaries
    of killed workers are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    corpora = {"train": open_corpus(cfg.train, cfg.format, cfg.text_field)}
    if cfg.val is not None:
        corpora["val"] = open_corpus(cfg.val, cfg.format, cfg.text_field)
    plan = _plan(folder, corpora)
    context = multiprocessing.get_context("spawn")  # no inherited state, threads or locks
    with closing(DigestCache(None)) as cache:
        try:
            with ProcessPoolExecutor(workers, mp_context=context,
                                     initializer=_init_worker) as pool:
                tokenizer = _tokenizer(cfg, layout, corpora["train"], plan["train"], pool,
                                       folder, cache_dir)
                separator = (tokenizer.eos_token_id if layout == "causal"
                             else tokenizer.sep_token_id)
                vocab = len(tokenizer)
                dtype = "uint16" if vocab <= UINT16_VOCAB else "uint32"
                tasks = [ChunkTask(corpora[name], start, stop, str(folder / _shard_name(name, i)),
                                   str(folder / "tokenizer" / "tokenizer.json"), separator,
                                   dtype, vocab)
                         for name, bounds in plan.items()
                         for i, (start, stop) in enumerate(bounds)]
                reused = {t.out: _reusable(Path(t.out), dtype, vocab, cache) for t in tasks}
                _run_tokenize(pool, [t for t in tasks if reused[t.out] is None])
        except BrokenProcessPool:
            raise UserError(
                f"{cfg.train}: a tokenizing worker process died, most likely killed by the "
                "operating system for lack of memory; run again with fewer workers (`bench "
                "data tokenize SUITE --workers N`) or more memory: the build goes on from its "
                "finished shards") from None

        def record(shard: Path) -> dict[str, Any]:
            return (reused[str(shard)] or _shard_record(shard)).model_dump()

        streams = {name: [record(folder / _shard_name(name, i)) for i in range(len(bounds))]
                   for name, bounds in plan.items()}
        splits = _splits(cfg, folder, streams)
        unigram = _train_unigram(folder, streams, splits, dtype, vocab)
        write_via(folder / "unigram.npy", lambda tmp: _save_array(tmp, unigram))
        own = {"unigram.npy": hash_file(folder / "unigram.npy", cache),
               "tokenizer": path_digest(folder / "tokenizer", cache)}
    _write_manifest(folder, {"layout": layout, "dtype": dtype, "vocab": vocab,
                             "streams": streams, "splits": splits, "sha256": own})
    for entry in folder.iterdir():
        if _SHARD_TEMPORARY.fullmatch(entry.name):  # a killed worker's; never read
            _remove(entry)


def _shard_name(stream: str, index: int) -> str:
    return f"{stream}-{index:05d}"


def _plan(folder: Path, corpora: dict[str, Corpus]) -> dict[str, list[tuple[int, int]]]:
    """The chunks of each corpus, kept in `plan.json` so a resumed build cuts the same chunks."""
    saved = folder / "plan.json"
    if os.path.lexists(saved):
        return _saved_plan(saved, corpora)
    plan = {name: chunk_bounds(c, HF_CHUNK_ROWS if c.kind == "hf" else CHUNK_BYTES)
            for name, c in corpora.items()}
    write_text(saved, json.dumps(plan))
    return plan


def _saved_plan(saved: Path, corpora: dict[str, Corpus]) -> dict[str, list[tuple[int, int]]]:
    """A resumed build's plan: for each corpus, chunks that cover it from start to end."""
    content = _read_record(saved)
    plan: dict[str, list[tuple[int, int]]] = {}
    for name, corpus in corpora.items():
        bounds = content.get(name) if isinstance(content, dict) else None
        if not _covers(bounds, corpus.size):
            raise ShardDamage(saved, f"no chunks of '{name}' that cover its {corpus.size} "
                              f"{'rows' if corpus.kind == 'hf' else 'bytes'} in order")
        plan[name] = [(start, stop) for start, stop in bounds]
    return plan


def _covers(bounds: object, size: int) -> TypeGuard[list[list[int]]]:
    """Whether `bounds` is a list of [start, stop] that tile [0, size) in order."""
    if not isinstance(bounds, list) or not all(
            isinstance(b, list) and len(b) == 2 and all(type(x) is int for x in b)
            for b in bounds):
        return False
    stops = [0] + [stop for _, stop in bounds]
    return [start for start, _ in bounds] == stops[:-1] and stops[-1] == size and all(
        start < stop for start, stop in bounds)


def _tokenizer(cfg: DataConfig, layout: str, corpus: Corpus, bounds: list[tuple[int, int]],
               pool: Executor, folder: Path, cache_dir: Path) -> "PreTrainedTokenizerFast":
    """The build's tokenizer, saved in `folder/tokenizer`; a BPE is trained on the training
    documents, streamed (after a parallel count of documents when the held-out cut needs it)."""
    saved = folder / "tokenizer"
    if os.path.lexists(saved):
        _own(saved, folder=True)
        return _saved_tokenizer(saved)
    key = corpus_key(cfg)
    documents: Callable[[], Iterator[str]] = lambda: _documents(corpus, bounds)  # noqa: E731
    needs_training = cfg.tokenizer.train_bpe is not None and not (
        bpe_folder(cfg.tokenizer.train_bpe, key, cache_dir, layout) / "tokenizer.json").is_file()
    if needs_training and cfg.val is None:
        counts = list(pool.map(_count_documents, [ChunkTask(corpus, s, e) for s, e in bounds]))
        n_train = sum(counts) - _held_out(sum(counts), cfg)
        documents = lambda: _first(_documents(corpus, bounds), n_train)  # noqa: E731
    tokenizer = load_tokenizer(cfg.tokenizer, documents, key, cache_dir, layout)
    build_dir(saved, tokenizer.save_pretrained)
    return tokenizer


def _documents(corpus: Corpus, bounds: list[tuple[int, int]]) -> Iterator[str]:
    for start, stop in bounds:
        yield from read_documents(corpus, start, stop)


def _first(documents: Iterator[str], n: int) -> Iterator[str]:
    for _, document in zip(range(n), documents, strict=False):
        yield document


def _held_out(documents: int, cfg: DataConfig) -> int:
    """Documents held out at the end of the corpus: val_fraction of them, at least 1."""
    if documents < 2:
        raise UserError(f"{cfg.train}: {documents} document(s); holding out the last "
                        "val_fraction needs at least 2 (or give a 'val' file)")
    return min(documents - 1, max(1, round(documents * cfg.val_fraction)))


def _run_tokenize(pool: Executor, tasks: list[ChunkTask]) -> None:
    """Tokenize the chunks in parallel, showing text MB, tokens/s and the time left."""
    total_mb = sum(t.stop - t.start for t in tasks) / 1e6  # rows, for a dataset
    bar = progress("tokenizing", "token")
    began, done_mb = time.monotonic(), 0.0
    try:
        for done in as_completed([pool.submit(_tokenize_chunk, t) for t in tasks]):
            shard_tokens, text_bytes = done.result()
            done_mb += text_bytes / 1e6
            elapsed = time.monotonic() - began
            left = elapsed * (total_mb - done_mb) / done_mb if done_mb else float("nan")
            bar.set_postfix(text=f"{done_mb:.0f}/{total_mb:.0f} MB", eta=f"{left:.0f}s")
            bar.update(shard_tokens)
    finally:
        bar.close()


def _splits(cfg: DataConfig, folder: Path, streams: dict[str, list[dict[str, Any]]]
            ) -> dict[str, Any]:
    """Where train and val lie in the streams: a val stream, or the last documents of train."""
    def total(stream: str, what: str) -> int:
        return sum(s[what] for s in streams[stream])

    if cfg.val is not None:
        return {name: {"stream": name, "first": 0, "tokens": total(name, "tokens"),
                       "documents": total(name, "documents"), "source": source}
                for name, source in (("train", cfg.train), ("val", cfg.val))}
    documents = total("train", "documents")
    n_val = _held_out(documents, cfg)
    cut = _document_end(folder, streams["train"], documents - n_val)
    source = f"{cfg.train} (its last {n_val} documents, val_fraction {cfg.val_fraction})"
    return {"train": {"stream": "train", "first": 0, "tokens": cut,
                      "documents": documents - n_val, "source": cfg.train},
            "val": {"stream": "train", "first": cut, "tokens": total("train", "tokens") - cut,
                    "documents": n_val, "source": source}}


def _document_end(folder: Path, shards: list[dict[str, Any]], n: int) -> int:
    """The stream offset where the first `n` documents end (read from one shard's index)."""
    offset = 0
    for shard in shards:
        if n <= shard["documents"]:
            return offset + (int(np.load(folder / shard["name"] / "docs.idx")[n - 1]) if n else 0)
        n -= shard["documents"]
        offset += shard["tokens"]
    return offset


def _train_unigram(folder: Path, streams: dict[str, list[dict[str, Any]]],
                   splits: dict[str, Any], dtype: str, vocab: int) -> np.ndarray:
    """Token counts of the training split: the train shards' counts, less the held-out tail's
    (counted from the stream in bounded slices)."""
    counts = np.zeros(vocab, dtype=np.int64)
    for shard in streams["train"]:
        counts += np.load(folder / shard["name"] / "unigram.npy")
    val = splits["val"]
    if val["stream"] == "train":
        stream = TokenStream([str(folder / s["name"] / "tokens.bin") for s in streams["train"]],
                             [s["tokens"] for s in streams["train"]], dtype)
        for start in range(val["first"], val["first"] + val["tokens"], CHUNK_BYTES):
            length = min(CHUNK_BYTES, val["first"] + val["tokens"] - start)
            counts -= np.bincount(stream.read(start, length), minlength=vocab)
    return counts


# --- in the worker processes -----------------------------------------------------------------

_TOKENIZERS: dict[str, tokenizers.Tokenizer] = {}


def _init_worker() -> None:
    """One thread per worker: the workers already occupy the cores."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def _count_documents(task: ChunkTask) -> int:
    return sum(1 for _ in read_documents(task.corpus, task.start, task.stop))


def _tokenize_chunk(task: ChunkTask) -> tuple[int, int]:
    """Write the chunk's shard folder whole, its files' digests recorded in the fingerprint
    cache (so the build's first opening costs no read); (its tokens, its text bytes)."""
    if task.tokenizer_file not in _TOKENIZERS:
        _TOKENIZERS[task.tokenizer_file] = tokenizers.Tokenizer.from_file(task.tokenizer_file)
    tokenizer = _TOKENIZERS[task.tokenizer_file]
    written: list[tuple[int, dict[str, tuple[os.stat_result, str]]]] = []
    build_dir(Path(task.out), lambda tmp: written.append(_write_shard(tmp, task, tokenizer)))
    tokens, files = written[0]
    with closing(DigestCache(None)) as cache:
        for name, (st, digest) in files.items():
            remember_digest(Path(task.out) / name, st, digest, cache)
    return tokens, task.stop - task.start


def _write_shard(folder: Path, task: ChunkTask, tokenizer: tokenizers.Tokenizer
                 ) -> tuple[int, dict[str, tuple[os.stat_result, str]]]:
    """tokens.bin, docs.idx, unigram.npy and shard.json of one chunk; the number of tokens,
    and each data file's stat and SHA-256 (tokens.bin's hashed as it is written)."""
    ends: list[np.ndarray] = []
    counts = np.zeros(task.vocab, dtype=np.int64)
    written = 0
    digest = hashlib.sha256()
    with open(folder / "tokens.bin", "wb") as out:
        for batch in _sub_batches(read_documents(task.corpus, task.start, task.stop)):
            encoded = tokenizer.encode_batch_fast([piece for piece, _ in batch],
                                                  add_special_tokens=False)
            ids = [e.ids for e in encoded]
            last = np.fromiter((ends_document for _, ends_document in batch), dtype=bool,
                               count=len(batch))
            for x in itertools.compress(ids, last):
                x.append(task.separator)
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=task.dtype,
                               count=int(lengths.sum()))
            data = flat.tobytes()
            out.write(data)
            digest.update(data)
            counts += np.bincount(flat, minlength=task.vocab)
            ends.append((written + np.cumsum(lengths))[last])
            written += len(flat)
    _save_array(folder / "docs.idx", np.concatenate(ends) if ends else np.zeros(0, np.int64))
    _save_array(folder / "unigram.npy", counts)
    sha256 = {"tokens.bin": digest.hexdigest()}
    for name in SHARD_FILES[1:]:
        sha256[name] = sha256_file(folder / name)
    record = ShardRecord(name=Path(task.out).name, documents=sum(len(e) for e in ends),
                         tokens=written, sha256=sha256)
    write_text(folder / "shard.json", record.model_dump_json(indent=1))
    return written, {name: ((folder / name).stat(), sha256[name]) for name in SHARD_FILES}


def _save_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:  # a handle: np.save would add ".npy" to another name
        np.save(handle, array)


def _sub_batches(documents: Iterator[str]) -> Iterator[list[tuple[str, bool]]]:
    """The documents' pieces of at most PIECE_CHARS characters (`document_pieces`: most
    documents are one), each with whether it ends its document, in lists of about
    SUB_BATCH_CHARS characters: the text a tokenizer holds at once."""
    batch: list[tuple[str, bool]] = []
    size = 0
    for piece in document_pieces(documents):
        batch.append(piece)
        size += len(piece[0])
        if size >= SUB_BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
