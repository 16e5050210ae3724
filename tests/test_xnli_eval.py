"""XNLI: loaders on files in each official layout's exact format (XNLI-1.0's 19-column TSV,
MultiNLI's JSON lines and TSV, XNLI-MT with both label spellings, Hugging Face's parquet), bad
inputs named by file and line, accuracy against scikit-learn, both protocols end to end through
the toy family's word-count classifier, resuming, and `bench eval xnli` rescoring the stored
predictions to the stored metrics."""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score
from support.toy_family import WordCounts

from bench.cli import main
from bench.errors import UserError
from bench.evals.adapters import Example, FinetuneConfig, Finetuned, PairClassifier
from bench.evals.evaluator import EvalSetting
from bench.evals.registry import get_evaluator
from bench.evals.xnli import (
    EVALUATOR,
    LANGUAGES,
    XnliEvalConfig,
    XnliEvaluator,
    accuracy,
    load_eval_splits,
    load_train,
    read_multinli,
    read_xnli_mt,
    read_xnli_tsv,
    xnli_metrics,
)

# ---- fixtures in the official layouts ----------------------------------------------------------

XNLI_HEADER = ("language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "promptID",
               "pairID", "genre", "label1", "label2", "label3", "label4", "label5",
               "sentence1_tokenized", "sentence2_tokenized", "match")
MULTINLI_TXT_HEADER = ("gold_label", "sentence1_binary_parse", "sentence2_binary_parse",
                       "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
                       "promptID", "pairID", "genre", "label1", "label2", "label3", "label4",
                       "label5")
IDS = {"entailment": 0, "neutral": 1, "contradiction": 2, "contradictory": 2}

# (premise, hypothesis, label) per language and split; the premises' words carry the label, so
# the word-count classifier learns something and its epochs differ.
EVAL = {
    "en": {"dev": [("birds fly", 'He said "no".', "contradiction"),
                   ("a dog", "A pet.", "neutral"),
                   ("the cat", "It's \"fine\"", "entailment")],
           "test": [("runs fast", "Someone runs.", "neutral"),
                    ('"birds" sing', "Quiet.", "contradiction"),
                    ("cat sleeps", "A cat.", "entailment"),
                    ("dog", "Nothing.", "neutral")]},
    "de": {"dev": [("Vögel fliegen", "Er sagte \"nein\".", "contradiction"),
                   ("ein Hund", "Ein Haustier.", "neutral")],
           "test": [("Hund rennt", "Jemand rennt.", "neutral"),
                    ("die Katze", '"Gut".', "entailment"),
                    ("Vögel", "Still.", "contradiction")]},
    "fr": {"dev": [("le chat", "Un \"chat\".", "entailment"),
                   ("un chien", "Un animal.", "neutral")],
           "test": [("oiseaux chantent", "Silence.", "contradiction"),
                    ("le chien court", "Quelqu'un court.", "neutral")]},
}
# MultiNLI train (English): one unlabelled row ('-') that loaders skip.
MULTINLI = [("the cat sleeps", "A cat rests.", "entailment"),
            ("a dog barks", "A dog is loud.", "neutral"),
            ("Nobody agreed.", "Everyone agreed.", "-"),
            ("birds sing", 'They said "quiet".', "contradiction"),
            ("cat cat", "Cats.", "entailment"),
            ("dog runs", "A dog moves.", "neutral"),
            ("birds birds fly", "Birds are still.", "contradiction")]
# XNLI-MT train: German spells the third class "contradictory", French "contradiction".
XNLI_MT = {"de": [("die Katze schläft", "Eine Katze ruht.", "entailment"),
                  ("ein Hund bellt", "Ein Hund ist laut.", "neutral"),
                  ("Vögel singen", 'Sie sagten "still".', "contradictory")],
           "fr": [("le chat dort", "Un chat se repose.", "entailment"),
                  ("un chien aboie", "Un chien est bruyant.", "neutral"),
                  ("oiseaux volent", "Les oiseaux sont calmes.", "contradiction")]}
EPOCHS = 3


def xnli_row(lang: str, i: int, premise: str, hypothesis: str, label: str) -> tuple[str, ...]:
    parse = "( x )" if lang == "en" else ""
    return (lang, label, parse, parse, parse, parse, premise, hypothesis, str(100 + i),
            f"{100 + i}{label[0]}", "facetoface", label, label, label, label, label,
            premise.lower(), hypothesis.lower(), "True")


def tsv(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    return "".join("\t".join(fields) + "\n" for fields in [header, *rows])


def write_tsv_root(root: Path, jsonl: bool = True) -> Path:
    """The official archives unpacked under one folder; languages interleaved in the XNLI files
    as the real ones list them by pair."""
    (root / "XNLI-1.0").mkdir(parents=True)
    for split in ("dev", "test"):
        rows = [xnli_row(lang, i, *ex) for lang, splits in EVAL.items()
                for i, ex in enumerate(splits[split])]
        rows.sort(key=lambda r: r[8])  # by promptID: languages interleaved
        (root / "XNLI-1.0" / f"xnli.{split}.tsv").write_text(tsv(XNLI_HEADER, rows),
                                                              encoding="utf-8")
    (root / "multinli_1.0").mkdir()
    if jsonl:
        lines = [json.dumps({"annotator_labels": [y], "genre": "fiction", "gold_label": y,
                             "pairID": f"{i}e", "promptID": str(i), "sentence1": a,
                             "sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT x)",
                             "sentence2": b, "sentence2_binary_parse": "( y )",
                             "sentence2_parse": "(ROOT y)"}, ensure_ascii=False)
                 for i, (a, b, y) in enumerate(MULTINLI)]
        (root / "multinli_1.0" / "multinli_1.0_train.jsonl").write_text(
            "\n".join(lines) + "\n", encoding="utf-8")
    else:
        rows = [(y, "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b, str(i), f"{i}e", "fiction",
                 y, "", "", "", "") for i, (a, b, y) in enumerate(MULTINLI)]
        (root / "multinli_1.0" / "multinli_1.0_train.txt").write_text(
            tsv(MULTINLI_TXT_HEADER, rows), encoding="utf-8")
    (root / "XNLI-MT-1.0" / "multinli").mkdir(parents=True)
    for lang, rows in XNLI_MT.items():
        (root / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv").write_text(
            tsv(("premise", "hypo", "label"), list(rows)), encoding="utf-8")
    return root


def expected_eval(lang: str, split: str) -> list[Example]:
    return [Example(i, a, b, IDS[y]) for i, (a, b, y) in enumerate(EVAL[lang][split])]


def expected_train(lang: str) -> list[Example]:
    rows = MULTINLI if lang == "en" else XNLI_MT[lang]
    return [Example(i, a, b, IDS[y]) for i, (a, b, y) in
            enumerate(r for r in rows if r[2] != "-")]


def write_parquet(path: Path, examples: list[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"premise": [e.text_a for e in examples],
                             "hypothesis": [e.text_b for e in examples],
                             "label": pa.array([e.label for e in examples], pa.int64())}), path)


def write_parquet_root(root: Path) -> Path:
    """Hugging Face's xnli: one folder per language; the test split in two shards."""
    for lang in EVAL:
        write_parquet(root / lang / "train-00000-of-00001.parquet", expected_train(lang))
        write_parquet(root / lang / "validation-00000-of-00001.parquet",
                      expected_eval(lang, "dev"))
        test = expected_eval(lang, "test")
        write_parquet(root / lang / "test-00000-of-00002.parquet", test[:1])
        write_parquet(root / lang / "test-00001-of-00002.parquet", test[1:])
    return root


@pytest.fixture(scope="module")
def tsv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tsv_root(tmp_path_factory.mktemp("xnli_tsv"))


@pytest.fixture(scope="module")
def parquet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_parquet_root(tmp_path_factory.mktemp("xnli_hf"))


def config(root: Path, **kw) -> XnliEvalConfig:
    kw.setdefault("finetune", FinetuneConfig(epochs=EPOCHS))
    return XnliEvalConfig(path=str(root), languages=["en", "de", "fr"], **kw)


# ---- loaders -----------------------------------------------------------------------------------

def test_xnli_tsv_reads_each_language_in_file_order_with_literal_quotes(tsv_root: Path) -> None:
    for split in ("dev", "test"):
        got = read_xnli_tsv(tsv_root / "XNLI-1.0" / f"xnli.{split}.tsv", ["fr", "en", "de"])
        assert got == {lang: expected_eval(lang, split) for lang in ("fr", "en", "de")}
    assert got["en"][1].text_a == '"birds" sing'  # a leading quote is text, not CSV quoting


@pytest.mark.parametrize("jsonl", [True, False])
def test_multinli_jsonl_and_txt_skip_unlabelled_rows(tmp_path: Path, jsonl: bool) -> None:
    root = write_tsv_root(tmp_path, jsonl=jsonl)
    name = "multinli_1.0_train." + ("jsonl" if jsonl else "txt")
    assert read_multinli(root / "multinli_1.0" / name) == expected_train("en")
    assert read_multinli(root / "multinli_1.0" / name, limit=3) == expected_train("en")[:3]
    assert load_train(config(root), "tsv", "en") == expected_train("en")


def test_xnli_mt_normalises_both_spellings_of_contradiction(tsv_root: Path) -> None:
    for lang in XNLI_MT:
        path = tsv_root / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv"
        assert read_xnli_mt(path, lang) == expected_train(lang)
        assert read_xnli_mt(path, lang)[2].label == 2
    assert read_xnli_mt(path, "fr", limit=1) == expected_train("fr")[:1]


def test_parquet_layout_gives_the_same_examples(tsv_root: Path, parquet_root: Path) -> None:
    langs = list(EVAL)
    tsv_layout, from_tsv = load_eval_splits(str(tsv_root), None, "auto", langs)
    hf_layout, from_hf = load_eval_splits(str(parquet_root), None, "auto", langs)
    assert (tsv_layout, hf_layout) == ("tsv", "parquet") and from_tsv == from_hf
    for lang in langs:
        assert (load_train(config(parquet_root), "parquet", lang)
                == load_train(config(tsv_root), "tsv", lang) == expected_train(lang))
    assert load_train(config(parquet_root, train_examples=2), "parquet", "de") == (
        expected_train("de")[:2])


def test_separate_folders_and_layouts(tsv_root: Path, parquet_root: Path, tmp_path: Path) -> None:
    cfg = XnliEvalConfig(xnli=str(tsv_root / "XNLI-1.0"), multinli=str(tsv_root / "multinli_1.0"),
                         xnli_mt=str(tsv_root / "XNLI-MT-1.0"), languages=["en", "de"])
    assert load_eval_splits(cfg.path, cfg.xnli, "auto", ["de"])[1]["de"]["dev"] == (
        expected_eval("de", "dev"))
    assert load_train(cfg, "tsv", "de") == expected_train("de")
    with pytest.raises(UserError, match=r"no data; expected Hugging Face's xnli folders"):
        load_eval_splits(str(tsv_root), None, "parquet", ["en"])
    with pytest.raises(UserError, match=r"no data; expected the official folder .*XNLI-1\.0"):
        load_eval_splits(str(tmp_path), None, "auto", ["en"])


# ---- bad input ---------------------------------------------------------------------------------

def broken_root(tmp_path: Path, edit) -> Path:
    root = write_tsv_root(tmp_path / "data")
    edit(root)
    return root


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


DEV = Path("XNLI-1.0/xnli.dev.tsv")
MT_DE = Path("XNLI-MT-1.0/multinli/multinli.train.de.tsv")
JSONL = Path("multinli_1.0/multinli_1.0_train.jsonl")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: (r / MT_DE).unlink(),
     r"multinli\.train\.de\.tsv: file not found; expected XNLI-MT-1\.0's machine-translated "
     r"MultiNLI train for language 'de'"),
    (lambda r: replace_in(r / DEV, "\tfacetoface\t", "\t"),
     r"xnli\.dev\.tsv:2: 18 tab-separated fields; expected 19 \(as the header\)"),
    (lambda r: replace_in(r / DEV, "\tneutral\t", "\tneutrall\t"),
     r"xnli\.dev\.tsv:\d+: gold_label 'neutrall'; expected one of entailment, neutral, "
     r"contradiction"),
    (lambda r: replace_in(r / DEV, "de\t", "xx\t"),
     r"xnli\.dev\.tsv:\d+: language 'xx'; expected one of ar, bg"),
    (lambda r: replace_in(r / DEV, "sentence2\t", "hypothesis\t"),
     r"xnli\.dev\.tsv:1: the header has no column sentence2"),
    (lambda r: replace_in(r / MT_DE, "contradictory", "contradicts"),
     r"multinli\.train\.de\.tsv:4: label 'contradicts'; expected one of entailment, neutral, "
     r"contradiction, contradictory"),
    (lambda r: replace_in(r / MT_DE, "\tneutral", " neutral"),
     r"multinli\.train\.de\.tsv:3: 2 tab-separated fields; expected 3"),
    (lambda r: replace_in(r / JSONL, '"gold_label": "neutral"', '"gold_label": "maybe"'),
     r"multinli_1\.0_train\.jsonl:2: gold_label 'maybe'; expected one of entailment"),
    (lambda r: replace_in(r / JSONL, '{"annotator_labels": ["neutral"]', '{oops'),
     r"multinli_1\.0_train\.jsonl:2: not JSON"),
    (lambda r: replace_in(r / JSONL, '"sentence1": "a dog barks"', '"sentence1": null'),
     r"multinli_1\.0_train\.jsonl:2: sentence1 None, sentence2 'A dog is loud\.'; expected two "
     r"strings"),
])
def test_bad_input_is_named_by_file_and_line_before_training(tmp_path: Path, edit,
                                                             match: str) -> None:
    root = broken_root(tmp_path, edit)
    with pytest.raises(UserError, match=match):
        EVALUATOR.check(config(root), None)


def test_check_reads_a_large_training_file_through_without_keeping_it(tmp_path: Path,
                                                                     tsv_root: Path) -> None:
    """MultiNLI's train is 393k pairs: the check before training parses every row (a bad one
    at the end is still named) in memory bounded by a row, unlike loading it for fine-tuning."""
    import shutil
    import tracemalloc

    root = tmp_path / "big"
    shutil.copytree(tsv_root, root)
    rows = 20_000
    with open(root / JSONL, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"gold_label": "neutral", "sentence1": f"premise number {i} "
                                "about a cat that sleeps on the mat", "sentence2": f"a pet {i}"})
                    + "\n")
    cfg = config(root, protocols=["zero_shot"])

    def peak(read) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    checked, loaded = peak(lambda: EVALUATOR.check(cfg, None)), peak(
        lambda: load_train(cfg, "tsv", "en"))
    assert checked * 10 < loaded, (checked, loaded)
    with open(root / JSONL, "a", encoding="utf-8") as f:
        f.write('{"gold_label": "maybe", "sentence1": "a", "sentence2": "b"}\n')
    with pytest.raises(UserError, match=rf"multinli_1\.0_train\.jsonl:{rows + 1}: gold_label"):
        EVALUATOR.check(cfg, None)


def test_a_language_without_rows_is_named(tmp_path: Path, tsv_root: Path) -> None:
    cfg = XnliEvalConfig(path=str(tsv_root), languages=["en", "sw"], protocols=["zero_shot"])
    with pytest.raises(UserError, match=r"xnli\.dev\.tsv: no rows for language 'sw'"):
        EVALUATOR.check(cfg, None)
    with pytest.raises(UserError, match=r"sw: no train-\*\.parquet file; expected Hugging Face's"
                                        r" xnli layout \(sw/train-\*\.parquet\)"):
        root = write_parquet_root(tmp_path / "hf")
        (root / "sw").mkdir()
        load_train(config(root), "parquet", "sw")


@pytest.mark.parametrize(("column", "value", "match"), [
    ("label", pa.array([0, 3, 1], pa.int64()), r"row 1: label 3; expected a class id 0\.\.2"),
    ("label", pa.array([0, -1, 1], pa.int64()), r"row 1: label -1"),
    ("hypothesis", pa.array(["a", None, "c"]), r"row 1: a missing text"),
])
def test_malformed_parquet_names_file_and_row(tmp_path: Path, column: str, value: pa.Array,
                                              match: str) -> None:
    cols = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2]}
    cols[column] = value
    path = tmp_path / "en" / "validation-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table(cols), path)
    with pytest.raises(UserError, match=re.escape(str(path)) + ": " + match):
        load_eval_splits(str(tmp_path), None, "parquet", ["en"])
    pq.write_table(pa.table({"premise": ["a"], "label": [0]}), path)
    with pytest.raises(UserError, match=r"no column hypothesis"):
        load_eval_splits(str(tmp_path), None, "parquet", ["en"])


def test_config_is_checked() -> None:
    cfg = XnliEvalConfig(path="xnli")
    assert cfg.languages == list(LANGUAGES) and len(LANGUAGES) == 15
    assert cfg.protocols == ["zero_shot", "translate_train"] and cfg.train_examples is None
    assert cfg.finetune.selection == "best"
    for kw, match in [({"languages": ["en", "xx"]}, "unknown XNLI language"),
                      ({"languages": ["en", "en"]}, "distinct"),
                      ({"protocols": ["zero_shot", "zero_shot"]}, "distinct"),
                      ({"languages": ["de"]}, "zero_shot selects its epoch on English dev"),
                      ({"tasks": ["mnli"]}, "Extra inputs"),
                      ({"train_examples": 0}, "greater than 0")]:
        with pytest.raises(ValueError, match=match):
            XnliEvalConfig(path="xnli", **kw)
    with pytest.raises(ValueError, match=r"give 'path' .* or multinli, xnli_mt"):
        XnliEvalConfig(xnli="XNLI-1.0")
    XnliEvalConfig(xnli="XNLI-1.0", multinli="m", protocols=["zero_shot"], languages=["en"])


# ---- metrics -----------------------------------------------------------------------------------

def test_accuracy_and_averages_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    splits = {}
    for lang in ("en", "de", "zh"):
        for kind in ("dev", "test"):
            n = int(rng.integers(1, 50))
            y, p = rng.integers(0, 3, n), rng.integers(0, 3, n)
            splits[f"{kind}.{lang}"] = (y.tolist(), p.tolist())
            assert accuracy(y, p) == pytest.approx(accuracy_score(y, p))
    m = xnli_metrics(splits)
    for lang in ("en", "de", "zh"):
        assert m[f"{lang}.acc"] == pytest.approx(accuracy_score(*splits[f"test.{lang}"]))
        assert m[f"{lang}.dev_acc"] == pytest.approx(accuracy_score(*splits[f"dev.{lang}"]))
    assert m["avg"] == pytest.approx(np.mean([m[f"{x}.acc"] for x in ("en", "de", "zh")]))
    assert m["dev_avg"] == pytest.approx(np.mean([m[f"{x}.dev_acc"] for x in ("en", "de", "zh")]))
    assert xnli_metrics({"test.en": ([0, 1, 2, 2], [0, 1, 1.0, 2])}) == {"en.acc": 0.75,
                                                                         "avg": 0.75}
    with pytest.raises(ValueError, match="class ids"):
        accuracy([0, 1], [0, 3])


# ---- the evaluator -----------------------------------------------------------------------------

@dataclass
class Recorded(WordCounts):
    """The toy family's word-count classifier, noting what each fine-tuning was given."""

    calls: list[tuple[str, list[Example], tuple[str, ...]]] = field(default_factory=list)

    def finetune(self, task, train, dev, settings, *, seed, scratch, score_epoch) -> Finetuned:
        self.calls.append((task.name, list(train), tuple(dev)))
        return super().finetune(task, train, dev, settings, seed=seed, scratch=scratch,
                                score_epoch=score_epoch)


def evaluate(cfg: XnliEvalConfig, workdir: Path, classifier: Recorded | None = None):
    classifier = classifier or Recorded()
    assert isinstance(classifier, PairClassifier)
    setting = EvalSetting(workdir=workdir, log=logging.getLogger("test"), seed=0)
    result = EVALUATOR.evaluate(cfg, classifier, setting)
    assert sorted(result.metrics) == sorted(EVALUATOR.metrics(cfg))  # what a report may name
    return result, classifier


def epoch_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_split(rows: list[dict], split: str) -> tuple[list, list]:
    kept = [r for r in rows if r["split"] == split]
    return [r["label"] for r in kept], [r["prediction"] for r in kept]


@pytest.mark.parametrize(("selection", "epoch"), [("best", 2), ("last", 3)])
def test_zero_shot_trains_on_english_and_selects_on_english_dev(
        tsv_root: Path, tmp_path: Path, selection: str, epoch: int) -> None:
    cfg = config(tsv_root, protocols=["zero_shot"],
                 finetune=FinetuneConfig(epochs=EPOCHS, selection=selection))
    result, classifier = evaluate(cfg, tmp_path / "xnli")
    [(name, train, splits)] = classifier.calls
    assert name == "xnli-zero_shot" and train == expected_train("en")
    assert splits == ("dev.en", "test.en", "dev.de", "test.de", "dev.fr", "test.fr")
    folder = tmp_path / "xnli" / "zero_shot"
    per_epoch = [epoch_rows(folder / f"dev_epoch{n}.jsonl") for n in range(1, EPOCHS + 1)]
    en_dev = [accuracy_score(*by_split(rows, "dev.en")) for rows in per_epoch]
    assert en_dev == pytest.approx([2 / 3, 1.0, 1.0])  # best: the first of the ties
    m = result.metrics
    assert m["zero_shot.epoch"] == epoch
    chosen = per_epoch[epoch - 1]
    assert result.samples == {"zero_shot": chosen}
    for lang in ("en", "de", "fr"):
        assert m[f"zero_shot.{lang}.acc"] == pytest.approx(
            accuracy_score(*by_split(chosen, f"test.{lang}")))
        assert m[f"zero_shot.{lang}.dev_acc"] == pytest.approx(
            accuracy_score(*by_split(chosen, f"dev.{lang}")))
    # epoch 3 learns that "runs" is neutral: English test 3/4 at epoch 2, 4/4 at epoch 3
    assert m["zero_shot.en.acc"] == (0.75 if epoch == 2 else 1.0)
    assert m["zero_shot.avg"] == pytest.approx(
        np.mean([m[f"zero_shot.{x}.acc"] for x in ("en", "de", "fr")]))
    assert result.provenance == {"epoch_selection": selection, "layout": "tsv"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "dev_epoch1.jsonl", "dev_epoch2.jsonl", "dev_epoch3.jsonl", "result.json"]


def test_translate_train_fine_tunes_each_language_on_its_own_data(tsv_root: Path,
                                                                  tmp_path: Path) -> None:
    cfg = config(tsv_root, protocols=["translate_train"], train_examples=2)
    result, classifier = evaluate(cfg, tmp_path / "xnli")
    assert [(n, t, s) for n, t, s in classifier.calls] == [
        (f"xnli-translate_train-{lang}", expected_train(lang)[:2], (f"dev.{lang}",
                                                                    f"test.{lang}"))
        for lang in ("en", "de", "fr")]
    m = result.metrics
    rows = result.samples["translate_train"]
    for lang in ("en", "de", "fr"):
        folder = tmp_path / "xnli" / "translate_train" / lang
        epoch = int(m[f"translate_train.{lang}.epoch"])
        dev = [accuracy_score(*by_split(epoch_rows(folder / f"dev_epoch{n}.jsonl"),
                                        f"dev.{lang}")) for n in range(1, EPOCHS + 1)]
        assert epoch == 1 + dev.index(max(dev))
        chosen = epoch_rows(folder / f"dev_epoch{epoch}.jsonl")
        assert [r for r in rows if r["split"].endswith(f".{lang}")] == chosen
        assert m[f"translate_train.{lang}.acc"] == pytest.approx(
            accuracy_score(*by_split(chosen, f"test.{lang}")))
        assert m[f"translate_train.{lang}.finetune_steps"] == 0.0
    # German learns its own words: "Hund" is neutral once epoch 2 counts the second example
    assert m["translate_train.de.epoch"] == 2 and m["translate_train.de.dev_acc"] == 0.5
    assert m["translate_train.de.acc"] == pytest.approx(2 / 3)
    assert set(m) >= {"translate_train.avg", "translate_train.dev_avg",
                      "translate_train.finetune_flops", "finetune_seconds"}


def test_both_layouts_give_the_same_metrics_and_finished_runs_are_not_redone(
        tsv_root: Path, parquet_root: Path, tmp_path: Path) -> None:
    from_tsv, first = evaluate(config(tsv_root), tmp_path / "tsv")
    from_hf, _ = evaluate(config(parquet_root), tmp_path / "hf")
    assert from_tsv.metrics == from_hf.metrics and from_tsv.samples == from_hf.samples
    # zero_shot, then translate_train de and fr: English's zero-shot fine-tuning serves both
    assert [name for name, _, _ in first.calls] == [
        "xnli-zero_shot", "xnli-translate_train-de", "xnli-translate_train-fr"]
    alone, _ = evaluate(config(tsv_root, protocols=["translate_train"]), tmp_path / "alone")
    m = from_tsv.metrics
    for name in ("en.acc", "en.dev_acc", "en.epoch", "en.finetune_steps"):
        assert m[f"translate_train.{name}"] == alone.metrics[f"translate_train.{name}"], name
    assert m["translate_train.en.acc"] == m["zero_shot.en.acc"]
    assert m["translate_train.avg"] == alone.metrics["translate_train.avg"]
    assert from_tsv.samples["translate_train"] == alone.samples["translate_train"]
    assert m["translate_train.en.finetune_tokens"] == m["zero_shot.finetune_tokens"] > 0
    assert m["finetune_tokens"] == m["zero_shot.finetune_tokens"] + sum(
        m[f"translate_train.{x}.finetune_tokens"] for x in ("de", "fr"))  # English once
    again, second = evaluate(config(tsv_root), tmp_path / "tsv")
    assert again == from_tsv and second.calls == []
    (tmp_path / "tsv" / "translate_train" / "fr" / "result.json").unlink()
    _, third = evaluate(config(tsv_root), tmp_path / "tsv")
    assert [name for name, _, _ in third.calls] == ["xnli-translate_train-fr"]


def test_registry_inputs_check_and_directions(tsv_root: Path, parquet_root: Path,
                                              tmp_path: Path) -> None:
    assert isinstance(get_evaluator("xnli"), XnliEvaluator)
    assert EVALUATOR.needs is PairClassifier and EVALUATOR.config_model is XnliEvalConfig
    mt = tsv_root / "XNLI-MT-1.0" / "multinli"
    assert EVALUATOR.inputs(config(tsv_root), None) == {
        "xnli.dev": str(tsv_root / DEV), "xnli.test": str(tsv_root / "XNLI-1.0/xnli.test.tsv"),
        "train.en": str(tsv_root / JSONL), "train.de": str(mt / "multinli.train.de.tsv"),
        "train.fr": str(mt / "multinli.train.fr.tsv")}
    assert EVALUATOR.inputs(config(parquet_root), None) == {
        lang: str(parquet_root / lang) for lang in ("en", "de", "fr")}
    assert EVALUATOR.inputs(config(tmp_path), None)["xnli.dev"] == str(tmp_path / DEV)  # no raise
    EVALUATOR.check(config(tsv_root), None)
    EVALUATOR.check(config(parquet_root), None)
    better = {"zero_shot.avg": True, "zero_shot.de.acc": True, "translate_train.fr.dev_acc": True,
              "zero_shot.dev_avg": True, "finetune_flops": False,
              "translate_train.de.finetune_seconds": False, "zero_shot.epoch": None}
    assert {k: EVALUATOR.higher_is_better(k) for k in better} == better


# ---- bench eval xnli ---------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("layout", ["tsv", "parquet"])
def test_cli_rescoring_the_stored_predictions_gives_the_stored_metrics(
        tsv_root: Path, parquet_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        layout: str) -> None:
    root = tsv_root if layout == "tsv" else parquet_root
    result, _ = evaluate(config(root), tmp_path / "xnli")
    for protocol in ("zero_shot", "translate_train"):
        samples = write_jsonl(tmp_path / f"samples_xnli_{protocol}.jsonl",
                              result.samples[protocol])
        out_json = tmp_path / f"{protocol}.json"
        assert main(["eval", "xnli", "--data", str(root), "--predictions", str(samples),
                     "--json", str(out_json)]) == 0
        assert f"xnli: {layout} data; dev.en 3 examples" in capsys.readouterr().out
        rescored = json.loads(out_json.read_text())["metrics"]
        stored = {k[len(protocol) + 1:]: v for k, v in result.metrics.items()
                  if k.startswith(f"{protocol}.") and k.rsplit(".", 1)[-1] in (
                      "acc", "dev_acc", "avg", "dev_avg")}
        assert rescored == stored and "avg" in rescored


@pytest.mark.parametrize(("rows", "match"), [
    ([{"split": "test.en", "idx": i, "prediction": 1} for i in range(3)],
     r"p\.jsonl: 1 of the 4 test\.en examples have no prediction \(idx 3\)"),
    ([{"split": "test.fr", "idx": i, "prediction": 3} for i in range(2)],
     r"p\.jsonl: test\.fr idx 0: prediction 3 \(2 such\); expected a xnli class id 0\.\.2"),
    ([{"split": "train.en", "idx": 0, "prediction": 1}],
     r"p\.jsonl: predictions for split 'train\.en'; expected dev\.<lang> or test\.<lang>"),
    ([{"split": "test.sw", "idx": 0, "prediction": 1}],
     r"xnli\.dev\.tsv: no rows for language 'sw'"),
    ([{"split": "test.en", "idx": 0}], r"p\.jsonl:1: prediction None"),
])
def test_cli_bad_predictions_exit_2_without_traceback(tsv_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      rows: list[dict], match: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert main(["eval", "xnli", "--data", str(tsv_root), "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(match, err), err
