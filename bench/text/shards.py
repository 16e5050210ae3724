"""Tokenized corpora on disk: built once by parallel workers, read as rows through memory maps.

A build is a folder `shards-<fingerprint>` under the cache. The corpus is cut into chunks of about
CHUNK_BYTES of text (HF_CHUNK_ROWS rows of a saved dataset) that end at document boundaries; each
worker process tokenizes one chunk at a time, in sub-batches of about SUB_BATCH_CHARS characters,
and writes one shard folder: `tokens.bin` (the flat token stream: every document followed by the
layout's separator, eos for "causal", [SEP] for "mlm"; uint16 when the vocabulary fits in 65,535
ids, uint32 otherwise), `docs.idx` (int64 end offset of each document in it, as Megatron's indexed
dataset keeps) and `unigram.npy` (the shard's token counts). A worker's memory is bounded by a
sub-batch, the main process's by the chunk plan, never by the corpus. Each shard folder is renamed
into place when complete, so a killed build resumes from its finished shards; `manifest.json`,
written last, marks a finished build, which is never rebuilt.

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
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import tokenizers

from bench.atomic import build_dir, remove_stale_temporaries, write_text, write_via
from bench.errors import UserError
from bench.fingerprint import fingerprint
from bench.progress import progress
from bench.sampling import batch_indices, permute
from bench.text.config import DataConfig
from bench.text.data import (
    Corpus,
    bpe_folder,
    chunk_bounds,
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
        """The rows optimizer step `step` trains on (see `bench.sampling.batch_indices`)."""
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
    from bench.data.demo_text import data_root

    if is_multilingual(cfg):
        return {f"data.shards.{n}": entry for n, c in language_configs(cfg).items()
                for entry in shards_input(c, layout).values()}
    key = shards_fingerprint(cfg, layout)
    return {"data.shards": {"path": str(data_root() / CACHE_SUBDIR / f"shards-{key}"),
                            "sha256": key}}


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
    if not (folder / "manifest.json").is_file():
        if build:
            build_shards(cfg, layout, folder, workers or os.cpu_count() or 1, Path(cache_dir))
        else:
            _wait_for(folder / "manifest.json", poll_s)
    return open_shards(folder, cfg, key)


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
    print(f"waiting for the main process to build the token shards {manifest.parent}",
          file=sys.stderr, flush=True)
    while not manifest.is_file():
        time.sleep(poll_s)


def open_shards(folder: Path, cfg: DataConfig, key: str) -> LMData:
    """A finished build's rows of `cfg.seq_len` (a UserError when a split has not one row)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    tokenizer = saved_tokenizer(folder / "tokenizer")
    mlm = manifest["layout"] == "mlm"
    frame = (tokenizer.cls_token_id, tokenizer.sep_token_id) if mlm else None
    row_len = cfg.seq_len - 2 if mlm else cfg.seq_len
    sources = {}
    for name, split in manifest["splits"].items():
        shards = manifest["streams"][split["stream"]]
        stream = TokenStream([str(folder / s["name"] / "tokens.bin") for s in shards],
                             [s["tokens"] for s in shards], manifest["dtype"])
        sources[name] = RowSource(stream, split["first"], split["tokens"], row_len, frame)
        if not len(sources[name]):
            raise UserError(
                f"{split['source']}: {split['documents']} {name} documents give "
                f"{split['tokens']} tokens, fewer than one row of seq_len {cfg.seq_len}; "
                "give more text or a shorter seq_len")
    splits = manifest["splits"]
    return LMData(tokenizer=tokenizer, train=sources["train"], val=sources["val"],
                  train_documents=splits["train"]["documents"],
                  val_documents=splits["val"]["documents"],
                  train_tokens=splits["train"]["tokens"], val_tokens=splits["val"]["tokens"],
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
    shards a killed build finished; the manifest is written last."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    corpora = {"train": open_corpus(cfg.train, cfg.format, cfg.text_field)}
    if cfg.val is not None:
        corpora["val"] = open_corpus(cfg.val, cfg.format, cfg.text_field)
    plan = _plan(folder, corpora)
    context = multiprocessing.get_context("spawn")  # no inherited state, threads or locks
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        tokenizer = _tokenizer(cfg, layout, corpora["train"], plan["train"], pool, folder,
                               cache_dir)
        separator = tokenizer.eos_token_id if layout == "causal" else tokenizer.sep_token_id
        vocab = len(tokenizer)
        dtype = "uint16" if vocab <= UINT16_VOCAB else "uint32"
        tasks = [ChunkTask(corpora[name], start, stop, str(folder / _shard_name(name, i)),
                           str(folder / "tokenizer" / "tokenizer.json"), separator, dtype, vocab)
                 for name, bounds in plan.items() for i, (start, stop) in enumerate(bounds)]
        _run_tokenize(pool, [t for t in tasks if not Path(t.out).is_dir()])
    streams = {name: [_shard_entry(folder, _shard_name(name, i)) for i in range(len(bounds))]
               for name, bounds in plan.items()}
    splits = _splits(cfg, folder, streams)
    unigram = _train_unigram(folder, streams, splits, dtype, vocab)
    write_via(folder / "unigram.npy", lambda tmp: _save_array(tmp, unigram))
    write_text(folder / "manifest.json", json.dumps(
        {"layout": layout, "dtype": dtype, "vocab": vocab, "streams": streams, "splits": splits},
        indent=1))


def _shard_name(stream: str, index: int) -> str:
    return f"{stream}-{index:05d}"


def _plan(folder: Path, corpora: dict[str, Corpus]) -> dict[str, list[tuple[int, int]]]:
    """The chunks of each corpus, kept in `plan.json` so a resumed build cuts the same chunks."""
    saved = folder / "plan.json"
    if saved.is_file():
        return {k: [tuple(b) for b in v] for k, v in json.loads(saved.read_text()).items()}
    plan = {name: chunk_bounds(c, HF_CHUNK_ROWS if c.kind == "hf" else CHUNK_BYTES)
            for name, c in corpora.items()}
    write_text(saved, json.dumps(plan))
    return plan


def _tokenizer(cfg: DataConfig, layout: str, corpus: Corpus, bounds: list[tuple[int, int]],
               pool: Executor, folder: Path, cache_dir: Path) -> "PreTrainedTokenizerFast":
    """The build's tokenizer, saved in `folder/tokenizer`; a BPE is trained on the training
    documents, streamed (after a parallel count of documents when the held-out cut needs it)."""
    saved = folder / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return saved_tokenizer(saved)
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


def _shard_entry(folder: Path, name: str) -> dict[str, Any]:
    ends = np.load(folder / name / "docs.idx")
    return {"name": name, "documents": len(ends), "tokens": int(ends[-1]) if len(ends) else 0}


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
    """Write the chunk's shard folder whole; (its tokens, its text bytes)."""
    if task.tokenizer_file not in _TOKENIZERS:
        _TOKENIZERS[task.tokenizer_file] = tokenizers.Tokenizer.from_file(task.tokenizer_file)
    tokenizer = _TOKENIZERS[task.tokenizer_file]
    written: list[int] = []
    build_dir(Path(task.out), lambda tmp: written.append(_write_shard(tmp, task, tokenizer)))
    return written[0], task.stop - task.start


def _write_shard(folder: Path, task: ChunkTask, tokenizer: tokenizers.Tokenizer) -> int:
    """tokens.bin, docs.idx and unigram.npy of one chunk; the number of tokens."""
    ends: list[np.ndarray] = []
    counts = np.zeros(task.vocab, dtype=np.int64)
    written = 0
    with open(folder / "tokens.bin", "wb") as out:
        for batch in _sub_batches(read_documents(task.corpus, task.start, task.stop)):
            ids = [e.ids for e in tokenizer.encode_batch_fast(batch, add_special_tokens=False)]
            lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
            for x in ids:
                x.append(task.separator)
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=task.dtype,
                               count=int(lengths.sum()))
            out.write(flat.tobytes())
            counts += np.bincount(flat, minlength=task.vocab)
            ends.append(written + np.cumsum(lengths))
            written += len(flat)
    _save_array(folder / "docs.idx", np.concatenate(ends) if ends else np.zeros(0, np.int64))
    _save_array(folder / "unigram.npy", counts)
    return written


def _save_array(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:  # a handle: np.save would add ".npy" to another name
        np.save(handle, array)


def _sub_batches(documents: Iterator[str]) -> Iterator[list[str]]:
    """Documents grouped into lists of about SUB_BATCH_CHARS characters."""
    batch: list[str] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document)
        if size >= SUB_BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
