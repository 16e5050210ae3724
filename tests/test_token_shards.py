"""Token shards (parallel, resumable builds read through memory maps) and O(batch) sampling."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support.textgen import lm_suite, narrative_passages, write_jsonl

from bench.errors import UserError
from bench.text import shards
from bench.text.config import DataConfig
from bench.text.data import chunk_bounds, open_corpus, read_documents
from bench.text.shards import prepare_lm_data
from bench.training.sampling import batch_indices, permute

# --- the permutation of an epoch -----------------------------------------------------------

SIZES = [1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 97, 100, 127, 128, 1000, 1024, 4099, 65536]


@pytest.mark.parametrize("n", SIZES)
def test_each_epoch_is_a_bijection(n):
    for seed, epoch in ((0, 0), (5, 3)):
        order = permute(np.arange(n), n, seed, epoch)
        assert order.dtype == np.int64
        assert np.array_equal(np.sort(order), np.arange(n))


@pytest.mark.parametrize("n", [1, 2, 7, 16, 97])
def test_steps_cover_every_row_once_per_epoch_and_batches_continue(n):
    batch = 5
    samples = np.concatenate([batch_indices(n, k, batch, seed=9) for k in range(3 * n)])
    epochs = samples[: (3 * n * batch) // n * n].reshape(-1, n)
    for order in epochs:
        assert np.array_equal(np.sort(order), np.arange(n))
    if n > 2:
        assert not np.array_equal(epochs[0], epochs[1])  # a fresh order each epoch


def test_batches_are_a_pure_function_of_seed_and_step():
    n = 10_007
    uninterrupted = [batch_indices(n, k, 64, seed=3) for k in range(40)]
    torch.manual_seed(1234)  # no global RNG state is involved
    np.random.seed(99)
    resumed = [batch_indices(n, k, 64, seed=3) for k in range(25, 40)]
    for a, b in zip(uninterrupted[25:], resumed, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(batch_indices(n, 0, 64, 3), batch_indices(n, 0, 64, 4))


def test_orders_look_shuffled():
    n = 5000
    order = permute(np.arange(n), n, seed=0, epoch=0)
    assert abs(np.corrcoef(np.arange(n), order)[0, 1]) < 0.05
    assert (order == np.arange(n)).sum() < 10  # ~1 fixed point expected
    steps = np.diff(order)
    assert len(np.unique(steps)) > n // 2  # no stride pattern
    other = permute(np.arange(n), n, seed=1, epoch=0)
    assert (order == other).sum() < 10


def test_a_step_costs_its_batch_not_the_corpus():
    rows = 300_000_000_000  # far more rows than memory could hold a permutation of
    began = time.perf_counter()
    picks = batch_indices(rows, 10**6, 1024, seed=0)
    assert time.perf_counter() - began < 1.0
    assert len(np.unique(picks)) == 1024 and picks.min() >= 0 and picks.max() < rows


# --- reading documents in chunks -----------------------------------------------------------


def test_plain_text_chunks_end_at_blank_lines_and_read_as_the_whole(tmp_path):
    paragraphs = [f"paragraph {i}\nsecond line {i}" for i in range(200)]
    separators = ["\n\n", "\n \t\n", "\r\n\r\n", "\n\n\n"]
    text = "".join(p + separators[i % 4] for i, p in enumerate(paragraphs))
    path = tmp_path / "c.txt"
    path.write_bytes(text.replace("\n", "\r\n", 3).encode())  # some CRLF too
    corpus = open_corpus(str(path))
    whole = list(read_documents(corpus))
    bounds = chunk_bounds(corpus, 100)
    assert len(bounds) > 20 and bounds[-1][1] == corpus.size
    assert [d for s, e in bounds for d in read_documents(corpus, s, e)] == whole
    assert whole[7] == "paragraph 7\nsecond line 7" and len(whole) == 200


def test_jsonl_error_in_a_later_chunk_names_its_line(tmp_path):
    lines = [f'{{"text": "document {i}"}}' for i in range(50)]
    lines[37] = '{"text": "broken'
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    corpus = open_corpus(str(path))
    bounds = chunk_bounds(corpus, 64)
    [(start, stop)] = [b for b in bounds if b[0] <= sum(len(x) + 1 for x in lines[:37]) < b[1]]
    assert start > 0
    with pytest.raises(UserError, match=rf"{path}:38: invalid JSON"):
        list(read_documents(corpus, start, stop))


# --- building and reading shards -----------------------------------------------------------


def every_row(source: shards.RowSource) -> torch.Tensor:
    return source.rows(np.arange(len(source)))


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", narrative_passages(300, seed=5))


def test_many_shards_read_as_one_and_resume_from_finished_shards(tmp_path, corpus,
                                                                  monkeypatch):
    cfg = DataConfig(train=str(corpus), seq_len=16, tokenizer={"train_bpe": 300})
    whole = prepare_lm_data(cfg, tmp_path / "one", workers=1)
    monkeypatch.setattr(shards, "CHUNK_BYTES", 4096)
    split = prepare_lm_data(cfg, tmp_path / "many", workers=2)
    names = sorted(p.name for p in split.folder.iterdir() if p.name.startswith("train-"))
    assert len(names) > 5
    for name in ("train", "val"):
        assert torch.equal(every_row(getattr(whole, name)), every_row(getattr(split, name)))
    assert split.fingerprint == whole.fingerprint  # chunking is not part of the identity
    tokens = np.fromfile(split.folder / names[0] / "tokens.bin", dtype=np.uint16)
    ends = np.load(split.folder / names[0] / "docs.idx")
    assert ends[-1] == len(tokens) and (tokens[ends - 1] == split.tokenizer.eos_token_id).all()

    # The unigram counts every training token, the dropped tail included, and no val token.
    train_tokens = split.train.stream.read(0, split.train_tokens)
    assert np.array_equal(split.unigram(), np.bincount(train_tokens, minlength=300))

    # A killed build: one shard and the manifest missing. Only that shard is made again.
    kept = {n: (split.folder / n / "tokens.bin").stat().st_ino for n in names}
    (split.folder / "manifest.json").unlink()
    for path in (split.folder / names[3]).iterdir():
        path.unlink()
    (split.folder / names[3]).rmdir()
    again = prepare_lm_data(cfg, tmp_path / "many", workers=1)
    for name in names:
        same = (split.folder / name / "tokens.bin").stat().st_ino == kept[name]
        assert same == (name != names[3])
    assert torch.equal(every_row(again.train), every_row(whole.train))


def test_a_process_that_must_not_build_waits_for_the_build(tmp_path, corpus):
    cfg = DataConfig(train=str(corpus), seq_len=16, tokenizer={"train_bpe": 300})
    opened: list[shards.LMData] = []
    waiter = threading.Thread(target=lambda: opened.append(
        prepare_lm_data(cfg, tmp_path / "cache", build=False, poll_s=0.05)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and not (tmp_path / "cache").exists()  # it built nothing
    built = prepare_lm_data(cfg, tmp_path / "cache", workers=1)
    waiter.join(timeout=30)
    assert opened and opened[0].fingerprint == built.fingerprint
    assert torch.equal(every_row(opened[0].train), every_row(built.train))


def test_memory_maps_are_reopened_in_each_process(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(40, dtype=np.uint16).tofile(path)
    stream = shards.TokenStream([str(path)], [40], "uint16")
    source = shards.RowSource(stream, 0, 40, 8)
    assert source.rows(np.array([1])).tolist() == [list(range(8, 16))]
    import pickle

    state = pickle.loads(pickle.dumps(source))
    assert state.stream._maps == [] and state.rows(np.array([4])).tolist() == [
        list(range(32, 40))]


def test_val_file_with_a_large_vocabulary_uses_uint32(tmp_path, corpus, monkeypatch):
    val = write_jsonl(tmp_path / "val.jsonl", narrative_passages(40, seed=6))
    cfg = DataConfig(train=str(corpus), val=str(val), seq_len=16,
                     tokenizer={"train_bpe": 300})
    small = prepare_lm_data(cfg, tmp_path / "a", workers=1)
    assert small.train.stream.dtype == "uint16"
    monkeypatch.setattr(shards, "UINT16_VOCAB", 10)  # as if the vocabulary were larger
    wide = prepare_lm_data(cfg, tmp_path / "b", workers=1)
    assert wide.train.stream.dtype == "uint32"
    assert torch.equal(every_row(wide.val), every_row(small.val))
    assert small.val_documents == 40


# --- bench data tokenize -------------------------------------------------------------------

MORE_VARIANTS = """\
  cwt: {objective: cwt, head: embedding_transpose}
  short: {data: {seq_len: 8}}
"""


def test_tokenize_command_builds_each_distinct_data_set_once(tmp_path, corpus, monkeypatch,
                                                            capsys):
    from bench.cli import main

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    suite = tmp_path / "suite.yaml"
    suite.write_text(lm_suite("tok-lm", corpus, variants=MORE_VARIANTS))
    assert main(["data", "tokenize", str(suite), "--workers", "1", "--only", "softmax",
                 "short"]) == 0
    out = capsys.readouterr().out
    assert "softmax:" in out and "short: same data as an earlier variant" in out
    assert "cwt" not in out
    [build] = (tmp_path / "data" / "lm-data").glob("shards-*")
    assert (build / "manifest.json").is_file()
    assert main(["data", "tokenize", str(suite), "--only", "nope"]) == 2
    assert "no such variant" in capsys.readouterr().err
