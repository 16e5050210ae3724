"""Multilingual pretraining corpora: per-language shards, language sampling weights and quotas,
batches that take each language's quota, and the distilbert-multilingual preset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.textgen import narrative_passages, write_jsonl

from bench.errors import UserError
from bench.text.config import DataConfig, SamplingConfig, TokenizerConfig
from bench.text.data import layout_tokenizer, text_inputs
from bench.text.languages import language_quotas, language_seed, language_weights
from bench.text.shards import MixedRows, language_val_batches, prepare_lm_data, shards_input
from bench.training.sampling import batch_indices

SIZES = {"de": 60, "en": 240, "fr": 20}  # documents per language


def _passages(language: str, n: int) -> list[str]:
    """Text a language's own: its name tags every document, so rows tell where they came from."""
    return [f"{language} {text} {language}" for text in narrative_passages(n, seed=len(language))]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cased BERT WordPiece tokenizer directory with [CLS]/[SEP]/[MASK]/[PAD] and no eos, as
    distilbert-base-multilingual-cased's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=False)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = [t for n, k in SIZES.items() for t in _passages(n, k)]
    wp.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200,
                                                            special_tokens=specials))
    folder = tmp_path_factory.mktemp("tok") / "wordpiece-cased"
    BertTokenizerFast(tokenizer_object=wp, do_lower_case=False, unk_token="[UNK]",
                      sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                      mask_token="[MASK]").save_pretrained(folder)
    return str(folder)


def _write_languages(folder: Path, sizes: dict[str, int] = SIZES) -> Path:
    """`de` as plain text (blank-line separated), the others as JSON lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for language, n in sizes.items():
        if language == "de":
            (folder / "de.txt").write_text("\n\n".join(_passages(language, n)) + "\n")
        else:
            write_jsonl(folder / f"{language}.jsonl", _passages(language, n))
    return folder


def _cfg(train: Path, tokenizer: str, **extra: object) -> DataConfig:
    return DataConfig.model_validate({"train": str(train), "seq_len": 16,
                                      "tokenizer": {"path": tokenizer}, **extra})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, wordpiece: str) -> tuple[DataConfig, object]:
    root = tmp_path_factory.mktemp("multi")
    cfg = _cfg(_write_languages(root / "wiki"), wordpiece, val_fraction=0.1)
    return cfg, prepare_lm_data(cfg, root / "cache", layout="mlm", workers=1)


# --- weights and quotas -----------------------------------------------------------------------

TOKENS = {"en": 800, "de": 150, "fr": 50}  # shares 0.8, 0.15, 0.05


def _weights(**sampling: object) -> dict[str, float]:
    cfg = DataConfig(train="x", seq_len=8, tokenizer=TokenizerConfig(path="t"),
                     sampling=SamplingConfig.model_validate(sampling))
    return language_weights(cfg, TOKENS)


def test_alpha_one_keeps_token_shares_and_alpha_zero_is_uniform():
    assert _weights(alpha=1.0) == pytest.approx({"en": 0.8, "de": 0.15, "fr": 0.05})
    assert _weights(alpha=0.0) == pytest.approx({"en": 1 / 3, "de": 1 / 3, "fr": 1 / 3})


def test_alpha_smooths_shares_as_the_formula_says():
    # 0.8^0.3 = 0.935248, 0.15^0.3 = 0.566019, 0.05^0.3 = 0.407091; sum 1.908358
    assert _weights(alpha=0.3) == pytest.approx(
        {"en": 0.490081, "de": 0.296598, "fr": 0.213321}, abs=1e-6)
    default = DataConfig(train="x", seq_len=8, tokenizer=TokenizerConfig(path="t"))
    assert language_weights(default, TOKENS) == pytest.approx(_weights(alpha=0.3))


def test_explicit_weights_are_normalised():
    assert _weights(weights={"en": 2.0, "de": 1.0, "fr": 1.0}) == pytest.approx(
        {"en": 0.5, "de": 0.25, "fr": 0.25})


def test_quotas_are_the_largest_remainder_and_sum_to_the_batch():
    weights = {"en": 0.490081, "de": 0.296598, "fr": 0.213321}
    # 16 x q = 7.84, 4.75, 3.41: floors 7, 4, 3 leave 2 rows, to en and de
    assert language_quotas(weights, 16) == {"en": 8, "de": 5, "fr": 3}
    # 10 x q = 4.90, 2.97, 2.13: floors 4, 2, 2 leave 2 rows, to en and de
    assert language_quotas(weights, 10) == {"en": 5, "de": 3, "fr": 2}
    # 6 x q = 1.5, 1.5, 3: floors 1, 1, 3 leave 1 row; the tie goes to the earlier language
    assert language_quotas({"a": 0.25, "b": 0.25, "c": 0.5}, 6) == {"a": 2, "b": 1, "c": 3}
    for batch in range(3, 40):
        assert sum(language_quotas(weights, batch).values()) == batch


def test_a_language_left_without_a_row_is_refused_naming_the_batch_size_it_needs():
    with pytest.raises(UserError, match=r"language\(s\) fr .* at least 20"):
        language_quotas({"en": 0.95, "fr": 0.05}, 10)


# --- corpora and their batches ----------------------------------------------------------------

def test_each_language_is_its_own_build_and_its_own_input(mixed):
    cfg, data = mixed
    assert list(data.languages) == ["de", "en", "fr"]
    assert isinstance(data.train, MixedRows)
    for language, part in data.train.parts.items():  # every row is its language's text
        text = data.tokenizer.batch_decode(part.rows(np.arange(len(part))))
        others = set(SIZES) - {language}
        assert not any(f" {o} " in f" {t} " for o in others for t in text)
        assert any(f" {language} " in f" {t} " for t in text)
    assert len(data.train) == sum(len(p) for p in data.train.parts.values())
    tokens = {n: d.train_tokens for n, d in data.languages.items()}
    assert data.train.weights == pytest.approx(language_weights(cfg, tokens))
    folder = Path(cfg.train)
    assert text_inputs(cfg) == {"data.train.de": str(folder / "de.txt"),
                                "data.train.en": str(folder / "en.jsonl"),
                                "data.train.fr": str(folder / "fr.jsonl"),
                                "data.tokenizer": cfg.tokenizer.path}
    assert set(shards_input(cfg, "mlm")) == {"data.shards.de", "data.shards.en", "data.shards.fr"}
    assert data.unigram().sum() == sum(d.unigram().sum() for d in data.languages.values())


def test_a_step_takes_each_languages_quota_from_its_own_epoch_order(mixed):
    _, data = mixed
    rows: MixedRows = data.train
    batch, seed = 12, 7
    quotas = language_quotas(rows.weights, batch)
    starts = np.cumsum([0] + [len(p) for p in rows.parts.values()])
    seen: dict[str, list[int]] = {n: [] for n in rows.parts}
    spread = []  # whether a step's languages are spread over the batch, not in blocks
    for step in range(6):
        picked = rows.step_indices(step, batch, seed)
        language = np.searchsorted(starts, picked, side="right") - 1
        for i, name in enumerate(rows.parts):
            assert (language == i).sum() == quotas[name]
            seen[name] += (picked[language == i] - starts[i]).tolist()
        spread.append(not np.array_equal(language, np.sort(language)))
        read = rows.rows(picked)
        for i, part in enumerate(rows.parts.values()):
            here = language == i
            assert torch.equal(read[torch.from_numpy(here)], part.rows(picked[here] - starts[i]))
    assert all(spread)
    for name, part in rows.parts.items():
        # steps 0..5 read samples [0, 6 q) of the language's own sequence of epochs
        own = batch_indices(len(part), 0, 6 * quotas[name], language_seed(seed, name))
        assert sorted(seen[name]) == sorted(own.tolist())
        first_epoch = seen[name][: len(part)]
        assert len(set(first_epoch)) == len(first_epoch)  # no row twice within an epoch


def test_a_resumed_run_reads_the_rows_of_an_uninterrupted_one(mixed):
    _, data = mixed
    in_sequence = [data.train.step_indices(k, 10, 3) for k in range(30)]
    torch.manual_seed(99)
    np.random.seed(5)
    resumed = MixedRows(data.train.parts, data.train.weights)  # a new process, from step 17
    fresh = [resumed.step_indices(k, 10, 3) for k in range(17, 30)]
    assert all(np.array_equal(a, b) for a, b in zip(in_sequence[17:], fresh, strict=True))
    assert not np.array_equal(data.train.step_indices(0, 10, 3), data.train.step_indices(0, 10, 4))


def test_validation_holds_out_each_language(mixed):
    _, data = mixed
    batches = language_val_batches(data.val, 1, 5)
    assert list(batches) == ["de", "en", "fr"]
    assert [len(b) for b in batches.values()] == [2, 2, 2]  # ceil(5 / 3) batches each
    for language, part in data.val.parts.items():
        assert torch.equal(torch.cat(batches[language]), part.rows(np.arange(2)))
        assert data.languages[language].val_documents >= 1


def test_languages_restrict_and_order_and_a_val_folder_pairs_by_language(tmp_path, wordpiece):
    train = _write_languages(tmp_path / "train")
    val = _write_languages(tmp_path / "val", {"en": 20, "fr": 20})
    cfg = _cfg(train, wordpiece, languages=["fr", "en"], val=str(val),
               sampling={"weights": {"fr": 1.0, "en": 3.0}})
    data = prepare_lm_data(cfg, tmp_path / "cache", layout="mlm", workers=1)
    assert list(data.train.parts) == ["fr", "en"]
    assert data.train.weights == {"fr": 0.25, "en": 0.75}
    assert data.languages["en"].val_documents == 20  # the val file, not a held-out slice
    assert data.sampling(8) == {
        "fr": {"tokens": data.languages["fr"].train_tokens, "weight": 0.25, "rows_per_batch": 2},
        "en": {"tokens": data.languages["en"].train_tokens, "weight": 0.75, "rows_per_batch": 6}}


def test_a_language_may_be_a_saved_dataset(tmp_path, wordpiece):
    import datasets

    train = _write_languages(tmp_path / "train", {"en": 30})
    datasets.Dataset.from_dict({"text": _passages("fr", 30)}).save_to_disk(str(train / "fr"))
    data = prepare_lm_data(_cfg(train, wordpiece), tmp_path / "cache", layout="mlm", workers=1)
    assert list(data.languages) == ["en", "fr"]
    assert " fr " in data.tokenizer.decode(data.train.parts["fr"].rows(np.arange(1))[0])


@pytest.mark.parametrize(("setup", "extra", "message"), [
    ("missing", {"languages": ["en", "xx"]}, r"{train}: no corpus for language\(s\) xx"),
    ("empty", {}, r"{train}/fr.jsonl: 0 document\(s\)"),
    ("weights", {"sampling": {"weights": {"en": 1.0, "de": 1.0, "fr": 1.0, "it": 1.0}}},
     r"{train}: data.sampling.weights names it, not among"),
    ("unweighted", {"sampling": {"weights": {"en": 1.0}}}, r"gives no weight to de, fr"),
    ("val", {"val": "VAL"}, r"{val}: no corpus for language\(s\) fr"),
    ("twice", {}, r"{train}: language 'en' has two corpora"),
    ("nothing", {}, r"{train}: no language corpora"),
])
def test_bad_language_folders_are_refused_naming_the_folder(tmp_path, wordpiece, setup, extra,
                                                            message):
    train = _write_languages(tmp_path / "train")
    val = _write_languages(tmp_path / "val", {"en": 5, "de": 5})
    if setup == "empty":
        (train / "fr.jsonl").write_text("")
    if setup == "twice":
        (train / "en.txt").write_text("en text\n")
    if setup == "nothing":
        for f in train.iterdir():
            f.unlink()
        (train / "README.md").write_text("not a corpus\n")
    extra = {k: (str(val) if v == "VAL" else v) for k, v in extra.items()}
    cfg = _cfg(train, wordpiece, **extra)
    with pytest.raises(UserError, match=message.format(train=train, val=val)):
        prepare_lm_data(cfg, tmp_path / "cache", layout="mlm", workers=1)


def test_a_multilingual_corpus_needs_a_shared_tokenizer_directory(tmp_path):
    cfg = DataConfig(train=str(_write_languages(tmp_path / "train")), seq_len=16,
                     tokenizer=TokenizerConfig(train_bpe=300))
    with pytest.raises(UserError, match=r"give data\.tokenizer\.path"):
        text_inputs(cfg)


def test_sampling_config_is_checked():
    for bad in ({}, {"alpha": 0.3, "weights": {"en": 1.0}}, {"alpha": 1.5},
                {"weights": {"en": 0.0}}):
        with pytest.raises(ValueError):
            SamplingConfig.model_validate(bad)
    with pytest.raises(ValueError, match="twice"):
        DataConfig(train="x", seq_len=8, tokenizer=TokenizerConfig(path="t"),
                   languages=["en", "en"])


# --- one corpus, as before --------------------------------------------------------------------

def test_a_single_file_corpus_is_read_and_identified_as_before(tmp_path, wordpiece):
    write_jsonl(tmp_path / "train.jsonl", _passages("en", 100))
    cfg = _cfg(tmp_path / "train.jsonl", wordpiece)
    dumped = cfg.model_dump(mode="json")
    assert "languages" not in dumped and "sampling" not in dumped  # run ids unchanged
    assert set(text_inputs(cfg)) == {"data.train", "data.tokenizer"}
    assert set(shards_input(cfg, "mlm")) == {"data.shards"}
    data = prepare_lm_data(cfg, tmp_path / "cache", layout="mlm", workers=1)
    assert not data.languages and data.sampling(8) == {}
    with pytest.raises(UserError, match="need a folder with one corpus per language"):
        text_inputs(_cfg(tmp_path / "train.jsonl", wordpiece, sampling={"alpha": 0.5}))


def test_a_bert_tokenizer_without_eos_serves_masked_lm_but_not_causal_rows(wordpiece):
    tok = layout_tokenizer(wordpiece, "mlm")
    assert tok.eos_token_id is None and tok.cls_token == "[CLS]" and tok.mask_token == "[MASK]"
    with pytest.raises(UserError, match="no eos token"):
        layout_tokenizer(wordpiece, "causal")


# --- the distilbert-multilingual preset -------------------------------------------------------

def _encoder_params(vocab: int, hidden: int = 768, layers: int = 6, ffn: int = 3072,
                    positions: int = 512, types: int = 1) -> int:
    """BERT's encoder by the formula: embeddings (+ LayerNorm), then per layer attention's four
    projections, two LayerNorms and the two FFN matrices, all with biases."""
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * (hidden * ffn) + ffn + hidden + 4 * hidden
    return embeddings + layers * layer


@pytest.mark.parametrize("vocab", [1000, 119_547])
def test_the_multilingual_preset_is_distilberts_geometry(vocab):
    from transformers import DistilBertConfig, DistilBertModel

    from bench.encoder.config import EncoderModelConfig
    from bench.encoder.model import build_encoder, count_parameters

    with torch.device("meta"):
        model = build_encoder(EncoderModelConfig(preset="distilbert-multilingual"), vocab, 0,
                              "cwt")
        distil = DistilBertModel(DistilBertConfig(vocab_size=vocab))
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings, config.type_vocab_size) \
        == (6, 768, 12, 3072, 512, 1)
    counted = count_parameters(model, "cwt")["total"]  # CWT trains the encoder alone
    assert counted == _encoder_params(vocab)
    # DistilBERT's own class: the same stack without the one segment embedding.
    assert counted == sum(p.numel() for p in distil.parameters()) + 768
    if vocab == 119_547:
        assert counted == 134_734_848


def test_pairs_fine_tune_through_a_one_segment_encoder(wordpiece):
    from bench.encoder.config import EncoderModelConfig
    from bench.encoder.finetune import ClsClassifier
    from bench.encoder.model import build_encoder

    small = EncoderModelConfig(preset="distilbert-multilingual", hidden_size=32, num_heads=2,
                               intermediate_size=64, num_layers=1, context=32)
    model = build_encoder(small, 200, 0, "softmax")
    classifier = ClsClassifier(model.bert, 3, 0.0)
    ids = torch.randint(5, 200, (2, 8))
    types = torch.tensor([[0] * 4 + [1] * 4] * 2)  # a pair's second sentence is segment 1
    assert classifier(ids, torch.ones_like(ids), types).shape == (2, 3)


def test_the_run_records_its_languages(tmp_path, wordpiece, monkeypatch):
    """A tiny multilingual encoder run: its provenance says each language's weight and rows per
    batch, and validation is scored per language."""
    from bench.cli import main

    train = _write_languages(tmp_path / "wiki")
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({
        "suite": "multilingual", "family": "encoder", "seeds": [0], "budget": {"steps": 3},
        "model": {"preset": "distilbert-multilingual", "hidden_size": 32, "num_heads": 2,
                  "intermediate_size": 64, "num_layers": 1, "context": 32},
        "data": {"train": str(train), "seq_len": 16, "tokenizer": {"path": wordpiece},
                 "sampling": {"alpha": 0.5}},
        "train": {"batch_size": 8, "optim": {"lr": 1.0e-3}, "validate_every": 2,
                  "val_batches": 3},
        "objective": "cwt", "variants": {"cwt": {}}}))
    results = tmp_path / "results"
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    (run,) = [p.parent for p in (results / "multilingual").glob("*/metrics.json")]
    provenance = json.loads((run / "provenance.json").read_text())
    languages = provenance["data.languages"]
    assert list(languages) == ["de", "en", "fr"]
    assert sum(e["rows_per_batch"] for e in languages.values()) == 8
    assert sum(e["weight"] for e in languages.values()) == pytest.approx(1.0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val.de.mlm_nll", "val.en.mlm_nll", "val.fr.mlm_nll"} <= set(metrics)
    assert set(provenance["inputs"]) >= {"data.train.en", "data.shards.fr", "data.tokenizer"}


def _lm_suite(folder: Path, wordpiece: str, **config: object) -> Path:
    """A micro causal-LM suite on the English and French corpora, with a BPE tokenizer that has
    an eos token (the causal layout packs documents with it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator([t for n, k in SIZES.items() for t in _passages(n, k)],
                            trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "</s>"]))
    tokenizer = folder / "bpe"
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>",
                            eos_token="</s>").save_pretrained(tokenizer)
    suite = folder / "suite.yaml"
    suite.write_text(json.dumps({
        "suite": "multilingual-lm", "family": "lm", "seeds": [0], "budget": {"steps": 3},
        "model": {"preset": "micro"},
        "data": {"train": str(_write_languages(folder / "wiki")), "seq_len": 16,
                 "tokenizer": {"path": str(tokenizer)}, "languages": ["en", "fr"]},
        "train": {"batch_size": 8, "optim": {"lr": 1.0e-3}, "validate_every": 2,
                  "val_batches": 4},
        "objective": "cwt", "head": "embedding_transpose", "evals": [],
        "variants": {"cwt": {}}} | config))
    return suite


def test_a_causal_lm_run_records_its_languages_too(tmp_path, wordpiece, monkeypatch):
    """The LM family reads the same folders: its provenance says the sampling, and its final
    held-out NLL is scored per language as well as over all of them."""
    from bench.cli import main

    suite = _lm_suite(tmp_path, wordpiece)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"),
                 "--no-progress"]) == 0
    (run,) = [p.parent for p in (tmp_path / "results").glob("multilingual-lm/*/metrics.json")]
    languages = json.loads((run / "provenance.json").read_text())["data.languages"]
    assert list(languages) == ["en", "fr"]
    assert sum(e["rows_per_batch"] for e in languages.values()) == 8
    metrics = json.loads((run / "metrics.json").read_text())
    # two batches per language: the overall NLL is the mean of the languages'
    assert metrics["val.nll"] == pytest.approx(
        (metrics["val.en.nll"] + metrics["val.fr.nll"]) / 2)
    assert metrics["val.en.nll"] != metrics["val.fr.nll"]
    assert {"val.en.loss", "val.fr.loss", "val.loss"} <= set(metrics)


def test_a_head_fine_tuning_batch_without_a_row_of_a_language_fails_before_training(
        tmp_path, wordpiece, monkeypatch, capsys):
    """French gets 2 of 8 pretraining rows but none of the head stage's 2: the run fails at its
    start, naming the batch, not after pretraining."""
    from bench.cli import main
    from bench.store.runs import Store

    suite = _lm_suite(tmp_path, wordpiece, head="finetune", budget={
        "steps": 4, "split": {"pretrain": 0.5, "head_finetune": 0.5}},
        head_finetune={"batch_size": 2, "optim": {"lr": 1.0e-3}})
    data = json.loads(suite.read_text())
    data["data"]["sampling"] = {"weights": {"en": 3, "fr": 1}}
    suite.write_text(json.dumps(data))
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    assert main(["run", str(suite), "--results", str(tmp_path / "results"),
                 "--no-progress"]) == 1
    (run,) = Store(tmp_path / "results").runs()
    assert run["state"] == "failed"
    assert "language(s) fr get weight 0.2500, less than one row of a batch of 2" in run["reason"]
    folder = tmp_path / "results" / "multilingual-lm" / run["run_id"]
    assert not (folder / "checkpoints").exists() or not any((folder / "checkpoints").iterdir())
