"""Pretraining text: documents read streaming from a corpus, and the tokenizers that encode them.

A corpus is a plain-text file (documents separated by blank lines), a JSON-lines file (one
object per line, the text in `text_field`) or a saved Hugging Face dataset. Documents are read
one at a time from a byte range of a file (or a row range of a dataset), so a corpus of any size
is read in bounded memory and can be cut into chunks that processes read in parallel
(`bench.text.shards` tokenizes them). Nothing here imports torch or transformers at import time:
tokenizing workers import this module.

A document is read whole (a JSON line is parsed whole: a few bytes per character) but tokenized
(and a BPE trained) in pieces of at most PIECE_CHARS characters, so a tokenizer's working memory
(some 180 bytes per character at once) is bounded however long a document is. A longer
document is cut before a space that begins a word (the last one within the bound): byte-level
BPE (GPT-2's, Pythia's, the BPE trained here) and BERT's WordPiece split words there anyway, so
the pieces' ids, joined in order, are those of the whole document (a tokenizer that prepends a
marker to every text it is given would see one more at each cut). A piece with no such space is
cut at PIECE_CHARS characters, where a word may be split in two.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bench.errors import UserError
from bench.text.config import DataConfig, TokenizerConfig
from bench.text.languages import is_multilingual, language_configs
from bench.util.atomic import build_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
# Special tokens by role. A causal row needs only eos; a masked-LM row is [CLS] ... [SEP] with
# [SEP] between documents, and [MASK] for corruption (BERT's names).
CAUSAL_ROLES = {"eos_token": EOS, "bos_token": EOS, "unk_token": EOS, "pad_token": EOS}
MLM_ROLES = {**CAUSAL_ROLES, "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
             "pad_token": "[PAD]"}
LAYOUTS = {"causal": CAUSAL_ROLES, "mlm": MLM_ROLES}
# Bump when tokenizer training changes in a way that must invalidate cached tokenizers.
PIPELINE_VERSION = 1
# A blank line (spaces and tabs only, LF or CRLF) separates plain-text documents.
_BLANK = re.compile(rb"[ \t]*(\r?\n)?")
HF_BATCH_ROWS = 1000  # rows of a saved dataset read at once
PIECE_CHARS = 1 << 20  # the longest text a tokenizer is given at once
# The last space within a piece's bound that begins a word: the greedy `.*` backtracks to it.
_LAST_CUT = re.compile(r".* (?=\S)", re.DOTALL)


@dataclass(frozen=True)
class Corpus:
    """A source of documents: `kind` is 'text', 'jsonl' or 'hf'; `size` its bytes or rows."""

    path: str
    kind: str
    text_field: str
    size: int


def _resolve_format(path: Path, format: str) -> str:
    if format != "auto":
        return format
    if path.is_dir():
        return "hf"
    return "jsonl" if path.suffix in (".jsonl", ".json") else "text"


def open_corpus(path: str, format: str = "auto", text_field: str = "text") -> Corpus:
    """The corpus at `path`, checked to exist in the form its format needs (a FIFO, device or
    socket is refused earlier, by its fingerprint: `bench.util.fingerprint.path_digest`)."""
    source = Path(path)
    if not source.exists():
        raise UserError(f"{path}: no such file or directory (expected the training text)")
    kind = _resolve_format(source, format)
    if kind == "hf":
        return Corpus(path, kind, text_field, len(_load_hf(source, text_field)))
    if source.is_dir():
        raise UserError(f"{path}: is a directory; format '{kind}' expects a file")
    return Corpus(path, kind, text_field, source.stat().st_size)


def read_documents(corpus: Corpus, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """The documents of bytes (rows, for a dataset) [start, stop) of a corpus, one at a time.

    `start` and `stop` must be document boundaries (see `chunk_bounds`). Plain text separates
    documents by blank lines; empty documents are dropped.
    """
    end = corpus.size if stop is None else stop
    if corpus.kind == "hf":
        return _hf_documents(corpus, start, end)
    if corpus.kind == "jsonl":
        return _jsonl_documents(corpus, start, end)
    return _text_documents(corpus, start, end)


def piece_bounds(text: str, limit: int = PIECE_CHARS) -> Iterator[tuple[int, int]]:
    """[start, stop) of each piece of at most `limit` characters a document is tokenized in
    (one piece for most documents): each cut lies before the last space within the bound that
    is followed by a non-space, else at the bound."""
    start = 0
    while len(text) - start > limit:
        match = _LAST_CUT.match(text, start + 1, start + limit + 2)
        cut = match.end() - 1 if match else start + limit
        yield start, cut
        start = cut
    yield start, len(text)


def document_pieces(documents: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """The documents' pieces in order (`piece_bounds`), each with whether it ends its
    document."""
    for document in documents:
        for start, stop in piece_bounds(document):
            yield document[start:stop], stop == len(document)


def chunk_bounds(corpus: Corpus, target: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of about `target` bytes (rows) covering the corpus, each ending at a
    document boundary: after a line (JSON lines), after a blank line (plain text)."""
    if corpus.kind == "hf":
        return [(s, min(s + target, corpus.size)) for s in range(0, corpus.size, target)]
    bounds, start = [], 0
    with open(corpus.path, "rb") as handle:
        while start < corpus.size:
            stop = _boundary_after(handle, start + target, corpus.kind == "text", corpus.size)
            bounds.append((start, stop))
            start = stop
    return bounds


def _boundary_after(handle: Any, position: int, blank_line: bool, size: int) -> int:
    """The first document boundary at or after the end of the line holding `position`."""
    if position >= size:
        return size
    handle.seek(position)
    handle.readline()
    while blank_line:
        line = handle.readline()
        if not line or _BLANK.fullmatch(line):
            break
    return handle.tell()


def _lines(path: str, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) for the lines of bytes [start, stop) of a file."""
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        while position < stop:
            line = handle.readline()
            if not line:
                return
            yield position, line
            position += len(line)


def _text_documents(corpus: Corpus, start: int, stop: int) -> Iterator[str]:
    lines: list[bytes] = []
    first = start
    for position, line in _lines(corpus.path, start, stop):
        if not _BLANK.fullmatch(line):
            if not lines:
                first = position
            lines.append(line)
            continue
        if lines:
            yield from _text_document(corpus.path, b"".join(lines), first)
            lines = []
    if lines:
        yield from _text_document(corpus.path, b"".join(lines), first)


def _text_document(path: str, raw: bytes, offset: int) -> Iterator[str]:
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").strip()
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {offset + error.start}); "
                        "expected UTF-8") from None
    if text:
        yield text


def _jsonl_documents(corpus: Corpus, start: int, stop: int) -> Iterator[str]:
    path, field = corpus.path, corpus.text_field
    for number, (_, raw) in enumerate(_lines(path, start, stop)):
        try:
            text = _jsonl_text(raw, field)
        except ValueError as error:
            line = _line_number(path, start) + number
            raise UserError(f"{path}:{line}: {error}") from None
        if text is not None:
            yield text


def _jsonl_text(raw: bytes, field: str) -> str | None:
    """The text of one JSON line (None for a blank line or blank text); ValueError says why not."""
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8; expected UTF-8 JSON lines") from None
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg}); expected one JSON object per line"
                         ) from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if field not in record:
        raise ValueError(f"no field '{field}' (fields: {', '.join(sorted(record))})")
    text = record[field]
    if not isinstance(text, str):
        raise ValueError(f"field '{field}' is {type(text).__name__}; expected a string")
    return text if text.strip() else None


def _line_number(path: str, offset: int) -> int:
    """The 1-based number of the line starting at byte `offset` (read in blocks: errors only)."""
    newlines, block = 0, 1 << 20
    with open(path, "rb") as handle:
        for position in range(0, offset, block):
            newlines += handle.read(min(block, offset - position)).count(b"\n")
    return newlines + 1


def _load_hf(path: Path, text_field: str) -> Any:
    import datasets  # heavy import, needed only for this format

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(
            f"{path}: not a saved Hugging Face dataset (expected datasets.save_to_disk output: "
            f"{error})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise UserError(
                f"{path}: dataset has splits {sorted(loaded)}; expected a 'train' split"
            )
        loaded = loaded["train"]
    if text_field not in loaded.column_names:
        raise UserError(
            f"{path}: no column '{text_field}' (columns: {', '.join(loaded.column_names)})"
        )
    return loaded.select_columns([text_field])


def _hf_documents(corpus: Corpus, start: int, stop: int) -> Iterator[str]:
    """Rows [start, stop) of the text column, read HF_BATCH_ROWS at a time."""
    loaded, field = _load_hf(Path(corpus.path), corpus.text_field), corpus.text_field
    for first in range(start, stop, HF_BATCH_ROWS):
        texts = loaded[first: min(first + HF_BATCH_ROWS, stop)][field]
        for row, text in enumerate(texts, start=first):
            if not isinstance(text, str):
                raise UserError(f"{corpus.path}: row {row}, column '{field}' is "
                                f"{type(text).__name__}; expected a string")
            if text.strip():
                yield text


def load_tokenizer(cfg: TokenizerConfig, documents: Callable[[], Iterable[str]], corpus_key: str,
                   cache_dir: Path, layout: str = "causal") -> "PreTrainedTokenizerFast":
    """A local tokenizer directory, or a byte-level BPE trained on `documents()` (cached).

    A trained BPE is cached under `cache_dir/tokenizers`, keyed by `corpus_key` (what identifies
    the training documents: the corpus's content fingerprint and how it is read and split), its
    size, the layout and the library version; the documents are streamed to the trainer, never
    held at once. It is saved with save_pretrained so that a saved model directory carrying it
    loads with AutoTokenizer, as lm-eval does.
    """
    if cfg.path is not None:
        return layout_tokenizer(cfg.path, layout)
    size = cfg.train_bpe
    assert size is not None  # guaranteed by TokenizerConfig
    target = bpe_folder(size, corpus_key, cache_dir, layout)
    if not (target / "tokenizer.json").is_file():
        roles = LAYOUTS[layout]
        build_dir(target, lambda tmp: _train_bpe(documents(), size, roles).save_pretrained(tmp))
    return saved_tokenizer(target)


def saved_tokenizer(folder: Path) -> "PreTrainedTokenizerFast":
    """A tokenizer this pipeline saved (a trained BPE, a build's copy): its tokenizer.json
    loads as a fast tokenizer, which AutoTokenizer's return type does not say."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return cast("PreTrainedTokenizerFast", tokenizer)


def bpe_folder(size: int, corpus_key: str, cache_dir: Path, layout: str) -> Path:
    """Where the BPE of `size` trained on the corpus `corpus_key` for `layout` is cached."""
    layout_key = "" if layout == "causal" else f"/{layout}"
    key = f"bpe/{PIPELINE_VERSION}/{size}/{tokenizers.__version__}{layout_key}/{corpus_key}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir) / "tokenizers" / f"bpe{size}-{digest}"


def layout_tokenizer(path: str, layout: str) -> "PreTrainedTokenizerFast":
    """A local tokenizer; for the masked-LM layout, [CLS], [SEP], [MASK] or a pad token that it
    lacks are added after its vocabulary (as the CWT paper does with the Pythia tokenizer)."""
    tokenizer = local_tokenizer(path)
    if layout == "causal" and tokenizer.eos_token_id is None:
        raise UserError(f"{path}: the tokenizer has no eos token (packing separates documents)")
    if layout == "mlm":
        added = ("cls_token", "sep_token", "mask_token", "pad_token")
        # the value type add_special_tokens declares (a dict: invariant in its values)
        missing: dict[str, str | AddedToken | Sequence[str | AddedToken]] = {
            r: MLM_ROLES[r] for r in added if getattr(tokenizer, r) is None}
        tokenizer.add_special_tokens(missing)
    return tokenizer


def vocab_size(cfg: TokenizerConfig, layout: str = "causal") -> int:
    """The model's vocabulary without training anything: a trained BPE's size is `train_bpe`
    (special tokens included); a local tokenizer counts the special tokens the layout adds."""
    if cfg.train_bpe is not None:
        return cfg.train_bpe
    assert cfg.path is not None  # guaranteed by TokenizerConfig
    return len(layout_tokenizer(cfg.path, layout))


def local_tokenizer(path: str) -> "PreTrainedTokenizerFast":
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise UserError(f"{path}: no such tokenizer directory (expected save_pretrained output)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot load a tokenizer from this directory: {error}") from None
    if not tokenizer.is_fast:
        raise UserError(f"{path}: a fast (tokenizer.json) tokenizer is needed for batch encoding")
    return cast("PreTrainedTokenizerFast", tokenizer)  # is_fast, checked above


def _train_bpe(documents: Iterable[str], vocab_size: int, roles: dict[str, str]
               ) -> "PreTrainedTokenizerFast":
    """A GPT-2-style byte-level BPE: every byte is in the alphabet, so no input is unknown.
    Trained on the documents' pieces (their words are those of the whole documents).

    `roles` maps tokenizer roles to special tokens; they count towards `vocab_size`.
    """
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(roles.values())),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((piece for piece, _ in document_pieces(documents)), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **roles)


def text_inputs(cfg: DataConfig) -> dict[str, str]:
    """The corpus files and tokenizer folder a text family's runs read, by config field; each
    language of a multilingual corpus as `data.train.<lang>` (and `data.val.<lang>`)."""
    if is_multilingual(cfg):
        return {**{f"{label}.{n}": path for n, c in language_configs(cfg).items()
                   for label, path in _corpus_inputs(c).items()},
                **_tokenizer_input(cfg)}
    return {**_corpus_inputs(cfg), **_tokenizer_input(cfg)}


def _corpus_inputs(cfg: DataConfig) -> dict[str, str]:
    return {"data.train": cfg.train, **({"data.val": cfg.val} if cfg.val is not None else {})}


def _tokenizer_input(cfg: DataConfig) -> dict[str, str]:
    return {"data.tokenizer": cfg.tokenizer.path} if cfg.tokenizer.path else {}
