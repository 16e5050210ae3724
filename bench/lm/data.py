"""Pretraining text: read, split, tokenized, packed into full-length rows, and batched by step.

Tokenizers and packed tensors are cached under a directory keyed by a hash of everything that
determines them, so repeated runs of a suite pay the preparation cost once. Batches are a pure
function of (step, seed) so a resumed run sees exactly the batches of an uninterrupted one.
"""

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from bench.atomic import build_dir, save_torch
from bench.errors import UserError
from bench.fingerprint import fingerprint
from bench.lm.config import DataConfig, TokenizerConfig

EOS = "<|endoftext|>"
# Special tokens by role. A causal row needs only eos; a masked-LM row is [CLS] ... [SEP] with
# [SEP] between documents, and [MASK] for corruption (BERT's names).
CAUSAL_ROLES = {"eos_token": EOS, "bos_token": EOS, "unk_token": EOS, "pad_token": EOS}
MLM_ROLES = {**CAUSAL_ROLES, "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
             "pad_token": "[PAD]"}
LAYOUTS = {"causal": CAUSAL_ROLES, "mlm": MLM_ROLES}
# Bump when the preparation changes in a way that must invalidate cached tokenizers or rows.
PIPELINE_VERSION = 1


def _resolve_format(path: Path, format: str) -> str:
    if format != "auto":
        return format
    if path.is_dir():
        return "hf"
    return "jsonl" if path.suffix in (".jsonl", ".json") else "text"


def read_documents(path: str, format: str = "auto", text_field: str = "text") -> list[str]:
    """The documents of a plain-text file, a JSON-lines file or a saved Hugging Face dataset.

    Plain text separates documents by blank lines; empty documents are dropped.
    """
    source = Path(path)
    if not source.exists():
        raise UserError(f"{path}: no such file or directory (expected the training text)")
    kind = _resolve_format(source, format)
    if kind == "hf":
        return _read_hf(source, text_field)
    if source.is_dir():
        raise UserError(f"{path}: is a directory; format '{kind}' expects a file")
    if kind == "jsonl":
        return _read_jsonl(source, text_field)
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}); expected UTF-8") from None
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [block.strip() for block in blocks if block.strip()]


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    documents = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise UserError(f"{where}: not UTF-8; expected UTF-8 JSON lines") from None
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{where}: invalid JSON ({error.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if text_field not in record:
                raise UserError(
                    f"{where}: no field '{text_field}' (fields: {', '.join(sorted(record))})"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise UserError(
                    f"{where}: field '{text_field}' is {type(text).__name__}; expected a string"
                )
            if text.strip():
                documents.append(text)
    return documents


def _read_hf(path: Path, text_field: str) -> list[str]:
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
    documents = []
    for row, text in enumerate(loaded[text_field]):
        if not isinstance(text, str):
            raise UserError(
                f"{path}: row {row}, column '{text_field}' is {type(text).__name__}; "
                "expected a string"
            )
        if text.strip():
            documents.append(text)
    return documents


def load_tokenizer(
    cfg: TokenizerConfig, documents: list[str], cache_dir: Path, layout: str = "causal"
) -> PreTrainedTokenizerFast:
    """A local tokenizer directory, or a byte-level BPE trained on `documents` (cached).

    The trained tokenizer is saved with save_pretrained so that a saved model directory
    carrying it loads with AutoTokenizer, as lm-eval does. For the masked-LM layout a local
    tokenizer that lacks [CLS], [SEP], [MASK] or a pad token gets them added (as the CWT paper
    does with the Pythia tokenizer); a trained one has them inside its vocabulary size.
    """
    roles = LAYOUTS[layout]
    if cfg.path is not None:
        tokenizer = local_tokenizer(cfg.path)
        if layout == "mlm":
            added = ("cls_token", "sep_token", "mask_token", "pad_token")
            missing = {r: MLM_ROLES[r] for r in added if getattr(tokenizer, r) is None}
            tokenizer.add_special_tokens(missing)
        return tokenizer
    assert cfg.train_bpe is not None  # guaranteed by TokenizerConfig
    digest = hashlib.sha256()
    layout_key = "" if layout == "causal" else f"/{layout}"  # causal keys predate layouts
    key = f"bpe/{PIPELINE_VERSION}/{cfg.train_bpe}/{tokenizers.__version__}{layout_key}"
    for part in (key, *documents):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    target = Path(cache_dir) / "tokenizers" / f"bpe{cfg.train_bpe}-{digest.hexdigest()[:24]}"
    if not (target / "tokenizer.json").is_file():
        build_dir(target,
                  lambda tmp: _train_bpe(documents, cfg.train_bpe, roles).save_pretrained(tmp))
    return AutoTokenizer.from_pretrained(str(target), local_files_only=True)


def vocab_size(cfg: TokenizerConfig, layout: str = "causal") -> int:
    """The model's vocabulary without training anything: a trained BPE's size is `train_bpe`
    (special tokens included); a local tokenizer counts the special tokens the layout adds."""
    if cfg.train_bpe is not None:
        return cfg.train_bpe
    return len(load_tokenizer(cfg, [], Path(), layout))


def local_tokenizer(path: str) -> PreTrainedTokenizerFast:
    if not Path(path).is_dir():
        raise UserError(f"{path}: no such tokenizer directory (expected save_pretrained output)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot load a tokenizer from this directory: {error}") from None
    if not tokenizer.is_fast:
        raise UserError(f"{path}: a fast (tokenizer.json) tokenizer is needed for batch encoding")
    if tokenizer.eos_token_id is None:
        raise UserError(f"{path}: the tokenizer has no eos token (packing separates documents)")
    return tokenizer


def _train_bpe(documents: list[str], vocab_size: int, roles: dict[str, str]
               ) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE: every byte is in the alphabet, so no input is unknown.

    `roles` maps tokenizer roles to special tokens; they count towards `vocab_size`.
    """
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
    bpe.train_from_iterator(documents, trainer=trainer, length=len(documents))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, **roles)


def pack(documents_token_ids: Sequence[Sequence[int]], seq_len: int, eos_id: int) -> torch.Tensor:
    """Documents concatenated, each followed by eos, cut into [N, seq_len] rows; tail dropped."""
    lengths = np.fromiter((len(ids) + 1 for ids in documents_token_ids), dtype=np.int64)
    flat = np.full(int(lengths.sum()), eos_id, dtype=np.int64)
    offset = 0
    for ids, length in zip(documents_token_ids, lengths, strict=True):
        flat[offset: offset + length - 1] = ids
        offset += length
    rows = len(flat) // seq_len
    return torch.from_numpy(flat[: rows * seq_len].reshape(rows, seq_len))


@dataclass
class LMData:
    """Packed training and validation rows with the tokenizer that produced them."""

    tokenizer: PreTrainedTokenizerFast
    train: torch.Tensor
    val: torch.Tensor
    train_documents: int
    val_documents: int
    train_tokens: int
    val_tokens: int
    fingerprint: str


def frame(rows: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
    """Masked-LM rows: [CLS] + a packed row + [SEP], as BERT frames a sequence."""
    n = rows.shape[0]
    return torch.cat([torch.full((n, 1), cls_id), rows, torch.full((n, 1), sep_id)], dim=1)


def prepare_lm_data(cfg: DataConfig, cache_dir: Path, layout: str = "causal") -> LMData:
    """Read, split, tokenize and pack the corpus, or load the packed rows from the cache.

    layout "causal": documents each followed by eos, rows of seq_len. "mlm": documents separated
    by [SEP], packed into seq_len - 2 tokens and framed as [CLS] ... [SEP].
    """
    train_docs = read_documents(cfg.train, cfg.format, cfg.text_field)
    if cfg.val is not None:
        val_docs = read_documents(cfg.val, cfg.format, cfg.text_field)
        val_name = cfg.val
    else:
        if len(train_docs) < 2:
            raise UserError(
                f"{cfg.train}: {len(train_docs)} document(s); holding out the last "
                "val_fraction needs at least 2 (or give a 'val' file)"
            )
        n_val = min(len(train_docs) - 1, max(1, round(len(train_docs) * cfg.val_fraction)))
        train_docs, val_docs = train_docs[:-n_val], train_docs[-n_val:]
        val_name = f"{cfg.train} (its last {n_val} documents, val_fraction {cfg.val_fraction})"
    fingerprint = _fingerprint(cfg, layout)
    tokenizer = load_tokenizer(cfg.tokenizer, train_docs, cache_dir, layout)
    cached = Path(cache_dir) / "lm-data" / f"{fingerprint}.pt"
    if cached.is_file():
        saved = torch.load(cached, weights_only=True)
        return LMData(tokenizer=tokenizer, fingerprint=fingerprint, **saved)
    encoder = tokenizer.backend_tokenizer
    splits = {}
    for name, docs, source in (("train", train_docs, cfg.train), ("val", val_docs, val_name)):
        ids = [e.ids for e in encoder.encode_batch_fast(docs, add_special_tokens=False)]
        if layout == "mlm":
            if cfg.seq_len < 3:
                raise UserError(f"data.seq_len {cfg.seq_len}: a masked-LM row needs at least 3 "
                                "positions ([CLS], a token, [SEP])")
            rows = frame(pack(ids, cfg.seq_len - 2, tokenizer.sep_token_id),
                         tokenizer.cls_token_id, tokenizer.sep_token_id)
        else:
            rows = pack(ids, cfg.seq_len, tokenizer.eos_token_id)
        tokens = sum(len(x) + 1 for x in ids)
        if rows.shape[0] == 0:
            raise UserError(
                f"{source}: {len(docs)} {name} documents give {tokens} tokens, fewer than one "
                f"row of seq_len {cfg.seq_len}; give more text or a shorter seq_len"
            )
        splits |= {name: rows, f"{name}_documents": len(docs), f"{name}_tokens": tokens}
    save_torch(splits, cached)
    return LMData(tokenizer=tokenizer, fingerprint=fingerprint, **splits)


def _fingerprint(cfg: DataConfig, layout: str) -> str:
    """Hash of every input the packed rows depend on: file contents and relevant settings."""
    key = {
        **({"layout": layout} if layout != "causal" else {}),  # causal keys predate layouts
        "pipeline": PIPELINE_VERSION,
        "tokenizers": tokenizers.__version__,
        "train": fingerprint(cfg.train),
        "val": fingerprint(cfg.val) if cfg.val is not None else None,
        "val_fraction": cfg.val_fraction if cfg.val is None else None,
        "format": cfg.format,
        "text_field": cfg.text_field,
        "seq_len": cfg.seq_len,
        "tokenizer": fingerprint(cfg.tokenizer.path) if cfg.tokenizer.path else None,
        "train_bpe": cfg.tokenizer.train_bpe,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def text_inputs(cfg: DataConfig) -> dict[str, str]:
    """The corpus files and tokenizer folder a text family's runs read, by config field."""
    return {"data.train": cfg.train,
            **({"data.val": cfg.val} if cfg.val is not None else {}),
            **({"data.tokenizer": cfg.tokenizer.path} if cfg.tokenizer.path else {})}


def val_batches(rows: torch.Tensor, batch_size: int, n: int) -> list[torch.Tensor]:
    """The first `n` full batches of the rows in order (one smaller batch if rows are fewer).

    Fixed batches make validation losses comparable across steps and runs.
    """
    full = min(n, rows.shape[0] // batch_size)
    if full == 0:
        return [rows] if rows.shape[0] else []
    return [rows[i * batch_size: (i + 1) * batch_size] for i in range(full)]
