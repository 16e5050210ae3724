"""The language-model data pipeline, the cloze cutter and the offline demo corpus."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.textgen import write_jsonl
from transformers import AutoTokenizer

import bench.text.data as lm_data
from bench.data.cloze import cut_cloze_passages, select_evenly, target_of
from bench.data.demo_text import FILES, build_demo_text, is_complete
from bench.data.sources import DownloadFailed, chunk_paragraphs, strip_gutenberg
from bench.errors import UserError
from bench.text import shards
from bench.text.config import DataConfig, TokenizerConfig
from bench.text.data import EOS, load_tokenizer, open_corpus, read_documents
from bench.text.shards import RowSource, TokenStream, prepare_lm_data, val_batches
from bench.training.sampling import batch_at

DOCS = [
    f"Document {n}: the miller of {town} carried {n} sacks of flour to the market at dawn, "
    f"and the baker of {town} paid him in silver. Marker{n}x closes this document."
    for n, town in enumerate(
        ["Avon", "Bury", "Crewe", "Derby", "Ely", "Frome", "Goole", "Hythe", "Ilkley", "Jarrow"]
    )
]


def documents(path: Path, **options) -> list[str]:
    return list(read_documents(open_corpus(str(path), **options)))


def data_cfg(train: Path, **overrides) -> DataConfig:
    values = {"train": str(train), "seq_len": 8, "tokenizer": {"train_bpe": 300}}
    return DataConfig(**(values | overrides))


# --- reading -------------------------------------------------------------------------------


def test_plain_text_splits_documents_on_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\nline two\n\n  \nsecond doc\r\n\r\nthird\n\n\n", encoding="utf-8")
    assert documents(path) == ["first doc\nline two", "second doc", "third"]


def test_jsonl_reads_the_named_field_and_skips_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "a", "id": 1}\n\n{"body": "b"}\n', encoding="utf-8")
    assert documents(path, text_field="body") == ["a", "b"]
    json_suffix = tmp_path / "c.json"  # .json is read as JSON lines too
    json_suffix.write_text('{"text": "only"}\n', encoding="utf-8")
    assert documents(json_suffix) == ["only"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"text": "ok"}', '{"text": "ok"}', '{"text": "broken'], [":3:", "invalid JSON"]),
        (['{"text": "ok"}', '{"body": "x"}'], [":2:", "no field 'text'", "body"]),
        (['{"text": 5}'], [":1:", "expected a string"]),
        (['["text"]'], [":1:", "expected a JSON object"]),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, lines, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        documents(path)
    assert str(path) in str(caught.value)
    for part in expected:
        assert part in str(caught.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(UserError, match=r"nowhere\.jsonl"):
        documents(missing)


def test_saved_hf_dataset_and_dataset_dict(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["x", "y"]}).save_to_disk(str(tmp_path / "ds"))
    assert documents(tmp_path / "ds") == ["x", "y"]
    split = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"body": ["t1", "t2"]}),
        test=datasets.Dataset.from_dict({"body": ["held"]}),
    )
    split.save_to_disk(str(tmp_path / "dd"))
    assert documents(tmp_path / "dd", text_field="body") == ["t1", "t2"]
    with pytest.raises(UserError, match="no column 'text'"):
        documents(tmp_path / "dd")
    datasets.DatasetDict(test=split["test"]).save_to_disk(str(tmp_path / "notrain"))
    with pytest.raises(UserError, match="'train' split"):
        documents(tmp_path / "notrain", text_field="body")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(UserError, match="not a saved Hugging Face dataset"):
        documents(tmp_path / "plain_dir")


# --- tokenizer -----------------------------------------------------------------------------


def test_bpe_training_is_deterministic_and_round_trips(tmp_path):
    cfg = TokenizerConfig(train_bpe=300)
    first = load_tokenizer(cfg, lambda: iter(DOCS), "docs", tmp_path / "a")
    second = load_tokenizer(cfg, lambda: iter(DOCS), "docs", tmp_path / "b")
    [dir_a] = (tmp_path / "a" / "tokenizers").iterdir()
    [dir_b] = (tmp_path / "b" / "tokenizers").iterdir()
    assert (dir_a / "tokenizer.json").read_bytes() == (dir_b / "tokenizer.json").read_bytes()
    assert len(first) == 300
    assert first.eos_token == first.bos_token == first.unk_token == first.pad_token == EOS
    assert first.convert_tokens_to_ids(EOS) == first.eos_token_id
    text = "The miller of Zennor paid 17 sacks!"
    assert first(text)["input_ids"] == second(text)["input_ids"]
    assert first.decode(first(text)["input_ids"]) == text

    first.save_pretrained(tmp_path / "model")  # as the trainer saves it next to the weights
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "model"), local_files_only=True)
    assert reloaded(text)["input_ids"] == first(text)["input_ids"]
    assert reloaded.eos_token_id == first.eos_token_id
    local = load_tokenizer(TokenizerConfig(path=str(tmp_path / "model")), list, "",
                           tmp_path / "c")
    assert local(text)["input_ids"] == first(text)["input_ids"]


def test_bpe_cache_hit_skips_training_and_new_corpus_misses(tmp_path, monkeypatch):
    cfg = TokenizerConfig(train_bpe=300)
    trained = load_tokenizer(cfg, lambda: iter(DOCS), "docs", tmp_path)

    def no_training(*args):
        raise AssertionError("the cached tokenizer should have been used")

    monkeypatch.setattr(lm_data, "_train_bpe", no_training)
    cached = load_tokenizer(cfg, lambda: iter(DOCS), "docs", tmp_path)
    assert cached.get_vocab() == trained.get_vocab()
    with pytest.raises(AssertionError):
        load_tokenizer(cfg, lambda: iter(DOCS), "other corpus", tmp_path)
    with pytest.raises(AssertionError):
        load_tokenizer(TokenizerConfig(train_bpe=301), lambda: iter(DOCS), "docs", tmp_path)


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(UserError, match="no such tokenizer directory"):
        load_tokenizer(TokenizerConfig(path=str(tmp_path / "absent")), list, "", tmp_path)


# --- packing and batches ---------------------------------------------------------------------


def token_rows(tmp_path: Path, n: int, row_len: int = 1) -> RowSource:
    """n rows of `row_len` tokens over a stream of two shard files; row i holds tokens
    i * row_len ..."""
    tokens = np.arange(n * row_len, dtype=np.uint16)
    half = len(tokens) // 2
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    tokens[:half].tofile(files[0])
    tokens[half:].tofile(files[1])
    return RowSource(TokenStream([str(f) for f in files], [half, len(tokens) - half], "uint16"),
                     0, len(tokens), row_len)


def test_rows_are_cut_consecutively_across_shards_and_framed(tmp_path):
    source = token_rows(tmp_path, 5, row_len=3)  # shards hold tokens 0..6 and 7..14
    rows = source.rows(np.array([2, 0, 4]))
    assert rows.dtype == torch.long
    assert rows.tolist() == [[6, 7, 8], [0, 1, 2], [12, 13, 14]]  # row 2 spans both shards
    tail = RowSource(source.stream, 4, 11, 4)  # tokens 4..14 in rows of 4: tail dropped
    assert len(tail) == 2 and tail.rows(np.array([1])).tolist() == [[8, 9, 10, 11]]
    framed = RowSource(source.stream, 0, 15, 3, frame=(100, 101))
    assert framed.rows(np.array([1])).tolist() == [[100, 3, 4, 5, 101]]
    with pytest.raises(IndexError):
        source.rows(np.array([5]))


def numbered_rows(n: int) -> torch.Tensor:
    return torch.arange(n).unsqueeze(1).repeat(1, 4)  # row i holds the value i


def test_each_epoch_visits_every_row_once_and_batches_wrap():
    rows = numbered_rows(10)
    samples = torch.cat([batch_at(rows, step, 3, seed=7)[:, 0] for step in range(10)]).tolist()
    assert len(samples) == 30
    epochs = [samples[e * 10: (e + 1) * 10] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert epochs[0] != epochs[1]  # a fresh order each epoch
    # step 3 covers samples 9..11: the last of epoch 0, then the first two of epoch 1
    assert batch_at(rows, 3, 3, seed=7)[:, 0].tolist() == [epochs[0][9], *epochs[1][:2]]
    big = batch_at(numbered_rows(3), 0, 7, seed=1)[:, 0].tolist()  # batch larger than the data
    assert len(big) == 7
    assert sorted(big[:3]) == sorted(big[3:6]) == [0, 1, 2]


def test_batches_are_a_pure_function_of_step_and_seed():
    rows = numbered_rows(37)
    uninterrupted = [batch_at(rows, step, 8, seed=3) for step in range(20)]
    torch.manual_seed(1234)  # global RNG state must not matter to a resumed run
    torch.rand(100)
    resumed = [batch_at(rows, step, 8, seed=3) for step in range(9, 20)]
    for a, b in zip(uninterrupted[9:], resumed, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(batch_at(rows, 0, 8, seed=3), batch_at(rows, 0, 8, seed=4))
    assert batch_at(rows, 5, 8, seed=3).shape == (8, 4)


def test_val_batches_are_the_first_fixed_batches(tmp_path):
    rows = token_rows(tmp_path, 10)
    batches = val_batches(rows, 3, 2)
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert len(val_batches(rows, 3, 100)) == 3  # only full batches
    assert [b[:, 0].tolist() for b in val_batches(token_rows(tmp_path, 2), 3, 4)] == [[0, 1]]


# --- prepare_lm_data -----------------------------------------------------------------------


def every_row(source: RowSource) -> torch.Tensor:
    return source.rows(np.arange(len(source)))


def test_held_out_slice_is_the_last_documents(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS)
    data = prepare_lm_data(data_cfg(train, val_fraction=0.2), tmp_path / "cache")
    assert (data.train_documents, data.val_documents) == (8, 2)
    train, val = every_row(data.train), every_row(data.val)
    val_text = data.tokenizer.decode(val.flatten().tolist())
    train_text = data.tokenizer.decode(train.flatten().tolist())
    assert "Marker8x" in val_text and "Marker9x" not in train_text
    assert "Marker6x" in train_text and "Marker6x" not in val_text
    assert train.shape[1] == 8 and train.shape[0] == data.train_tokens // 8
    assert (train == data.tokenizer.eos_token_id).sum() >= 7  # one eos between documents


def test_separate_val_file_and_second_call_uses_the_cache(tmp_path, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", DOCS[:7])
    val = write_jsonl(tmp_path / "val.jsonl", DOCS[7:])
    cfg = data_cfg(train, val=str(val))
    first = prepare_lm_data(cfg, tmp_path / "cache")
    assert (first.train_documents, first.val_documents) == (7, 3)

    def no_building(*args):
        raise AssertionError("the shards should have come from the cache")

    monkeypatch.setattr(shards, "build_shards", no_building)
    second = prepare_lm_data(cfg, tmp_path / "cache")
    assert torch.equal(every_row(first.train), every_row(second.train))
    assert torch.equal(every_row(first.val), every_row(second.val))
    assert second.fingerprint == first.fingerprint
    write_jsonl(val, DOCS[6:])  # changed content must not hit the old entry
    with pytest.raises(AssertionError):
        prepare_lm_data(cfg, tmp_path / "cache")


def test_too_small_corpus_names_the_file_and_sizes(tmp_path):
    train = write_jsonl(tmp_path / "tiny.jsonl", DOCS[:4])
    with pytest.raises(UserError, match=r"tiny\.jsonl.*tokens.*seq_len 4096"):
        prepare_lm_data(data_cfg(train, seq_len=4096), tmp_path / "cache")
    lonely = write_jsonl(tmp_path / "one.jsonl", DOCS[:1])
    with pytest.raises(UserError, match=r"one\.jsonl"):
        prepare_lm_data(data_cfg(lonely), tmp_path / "cache")


# --- cloze proxy and source cleaning ---------------------------------------------------------


def test_cloze_target_occurs_earlier_and_is_bare():
    text = "Anna saw a lantern. She lifted the lantern, and the lantern glowed. Nobody came."
    assert cut_cloze_passages(text, seed="s", min_words=3, max_words=30) == [
        "Anna saw a lantern. She lifted the lantern"
    ]
    assert target_of("lantern,") == "lantern" and target_of("lantern") is None
    assert target_of("them.") is None  # function words are never targets


def test_cloze_skips_speaker_labels_and_stage_directions():
    play = "Macbeth greeted Banquo warmly.\nBanquo.\nWell met.\n[Exit Banquo.]"
    assert cut_cloze_passages(play, seed="s", min_words=3, max_words=30) == []


def test_cloze_passages_keep_their_invariants():
    sentences = [
        f"The ferryman {verb} the {thing} across the river, and the {thing} was {state}."
        for verb, thing, state in [
            ("rowed", "pilgrim", "grateful"), ("carried", "merchant", "silent"),
            ("pulled", "shepherd", "weary"), ("guided", "soldier", "afraid"),
        ]
    ]
    passages = cut_cloze_passages(" ".join(sentences * 6), seed="x", min_words=12, max_words=30)
    assert len(passages) >= 4
    for passage in passages:
        words = passage.split(" ")
        assert "" not in words and 12 <= len(words) <= 30
        assert words[-1].isalpha() and words[-1] in {w.strip(",.") for w in words[:-1]}
        assert words[0] == "The"  # passages start at a sentence start


def test_select_evenly():
    assert select_evenly(list("abcdefghij"), 5) == list("acegi")
    assert select_evenly(list("abc"), 5) == list("abc")


def test_gutenberg_boilerplate_is_removed():
    raw = (
        "The Project Gutenberg EBook of Hamlet\nlicence text\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "Who's there?\n<<THIS ELECTRONIC VERSION IS COPYRIGHT\nSHAREWARE>>\nNay, answer me.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n"
    )
    assert strip_gutenberg(raw).split() == ["Who's", "there?", "Nay,", "answer", "me."]


def test_chunks_group_whole_paragraphs():
    def sizes(*paragraphs: int) -> list[int]:
        text = "\n\n".join(" ".join(["w"] * n) for n in paragraphs)
        return [len(chunk.split()) for chunk in chunk_paragraphs(text, words=10)]

    assert sizes(5, 5, 12, 3) == [10, 12, 3]
    assert sizes(5, 5, 12, 1) == [10, 13]  # a stray short tail joins the previous chunk


# --- the real demo corpus ------------------------------------------------------------------


@pytest.mark.slow
def test_demo_corpus_builds_deterministically(tmp_path):
    try:
        out = build_demo_text(tmp_path / "a")
    except DownloadFailed as error:
        pytest.skip(f"the source packages cannot be downloaded here: {error}")
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["files"]
    lines = {name: (out / name).read_text().splitlines() for name in FILES if name != "SOURCES.md"}
    for name, rows in lines.items():
        assert len(rows) == files[name]["documents"]
    assert len(lines["train.jsonl"]) > 3000 and len(lines["val.jsonl"]) > 100
    train = {json.loads(row)["text"] for row in lines["train.jsonl"]}
    val = [json.loads(row)["text"] for row in lines["val.jsonl"]]
    assert not train & set(val)
    assert "Gutenberg" not in "".join(train)

    held_out = " ".join(" ".join(doc.split()) for doc in val)
    cloze = [json.loads(row) for row in lines["lambada_proxy.jsonl"]]
    assert len(cloze) == manifest["cloze"]["passages"] == 500
    for record in cloze:
        assert list(record) == ["text"]
        words = record["text"].split(" ")
        assert 40 <= len(words) <= 120
        assert target_of(words[-1] + ".") == words[-1]
        assert words[-1] in set(re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", " ".join(words[:-1])))
        assert " ".join(words[:-1]) in held_out  # cut from held-out text only
    assert "PROXY" in (out / "SOURCES.md").read_text()

    assert build_demo_text(out) == out and is_complete(out)  # a finished build is kept
    (out / "lambada_proxy.jsonl").write_text("half written")
    assert not is_complete(out)
    again = build_demo_text(tmp_path / "b")
    build_demo_text(out)  # the damaged build is redone
    for name in [*FILES, "manifest.json"]:
        assert (out / name).read_bytes() == (again / name).read_bytes()
