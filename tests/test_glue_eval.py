"""GLUE scoring: every metric against scikit-learn and scipy on random and degenerate cases, the
loaders on files in each task's exact official TSV layout and in Hugging Face's parquet layout,
malformed inputs, MNLI's concatenated dev sets, the paper's GLUE score, `bench eval glue`, and the
evaluator's side of fine-tuning (epoch selection, per-task results) on a scripted classifier."""

import json
import logging
import math
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bench.cli import main
from bench.errors import UserError
from bench.evals.adapters import Example, FinetuneConfig, Finetuned, PairClassifier, TaskSpec
from bench.evals.evaluator import EvalSetting
from bench.evals.finetune_select import _select
from bench.evals.glue import (
    EVALUATOR,
    PAPER_TASKS,
    TASKS,
    GlueEvalConfig,
    GlueEvaluator,
    evaluate_task,
    glue_score,
    load_task,
    read_predictions,
    read_split,
    split_metrics,
)

# ---- the official TSV layout -------------------------------------------------------------------
# Rows as download_glue_data.py leaves them (real GLUE lines, a few quotes added), as field tuples.

BP = "( ( The ( new rights ) ) ( are ( nice enough ) ) )"  # a stand-in for MNLI's parse columns
PARSE = "(ROOT (S (NP (DT The) (JJ new) (NNS rights)) (VP (VBP are) (ADJP (JJ nice) (RB enough)))))"
MNLI_HEAD = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
             "sentence2")
HEADERS = {
    "cola": None,
    "sst2": ("sentence", "label"),
    "mrpc": ("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"),  # MRPC keeps its BOM
    "stsb": ("index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2", "score"),
    "qqp": ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
    "mnli": (*MNLI_HEAD, "label1", "gold_label"),
    "mnli_dev": (*MNLI_HEAD, "label1", "label2", "label3", "label4", "label5", "gold_label"),
    "qnli": ("index", "question", "sentence", "label"),
    "rte": ("index", "sentence1", "sentence2", "label"),
    "wnli": ("index", "sentence1", "sentence2", "label"),
}


def mnli(i: str, pair: str, genre: str, a: str, b: str, *labels: str) -> tuple[str, ...]:
    return (i, pair[:-1], pair, genre, BP, BP, PARSE, PARSE, a, b, *labels)


ROWS = {
    "cola": {
        "train": [("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one "
                   "we propose."),
                  ("gj04", "0", "*", '"They drank the pub dry," he said they.')],
        "dev": [("gj04", "1", "", "The sailors rode the breeze clear of the rocks."),
                ("cj99", "0", "*", 'Mary said "leave" John.'),
                ("cj99", "1", "", "The more we study verbs, the crazier they get.")],
    },
    "sst2": {
        "train": [("hide new secretions from the parental units ", "0"),
                  ('"the greatest musicians " ', "1")],
        "dev": [("it 's a charming and often affecting journey . ", "1"),
                ('unflinchingly bleak and " desperate ', "0")],
    },
    "mrpc": {
        "train": [("1", "702876", "702977", 'Amrozi accused his brother , whom he called " the '
                   'witness " , of deliberately distorting his evidence .', 'Referring to him as '
                   'only " the witness " , Amrozi accused his brother of deliberately distorting '
                   "his evidence ."),
                  ("0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain "
                   "to Safeway in 1998 for $ 2.5 billion .", "Yucaipa bought Dominick 's in 1995 "
                   "for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .")],
        "dev": [("1", "1355540", "1355592", "He said the foodservice pie business doesn 't fit "
                 "the company 's long-term growth strategy .", '" The foodservice pie business '
                 'does not fit our long-term growth strategy .'),
                ("0", "2029631", "2029565", "Magnarelli said Racicot hated the Iraqi regime and "
                 "looked forward to using his long years of training in the war .", 'His wife '
                 'said he was " 100 percent behind George Bush " and looked forward to using his '
                 "years of training in the war .")],
    },
    "stsb": {
        "train": [("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                   "A plane is taking off.", "An air plane is taking off.", "5.000"),
                  ("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none",
                   "A man is playing a large flute.", "A man is playing a flute.", "3.800")],
        "dev": [("0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                 "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.",
                 "5.000"),
                ("1", "main-news", "headlines", "2013", "0019", "none", "none",
                 '"Obama" signs bill', 'Obama vetoes "bill"', "0.400"),
                ("2", "main-forums", "deft-forum", "2014", "0023", "none", "none",
                 "I think it's fine.", "It is probably fine.", "3.250")],
    },
    "qqp": {
        "train": [("133273", "213221", "213222", "How is the life of a math student? Could you "
                   "describe your own experiences?", "Which level of prepration is enough for "
                   "the exam jlpt5?", "0"),
                  ("402555", "536040", "536041", "How do I control my horny emotions?",
                   "How do you control your horniness?", "1")],
        "dev": [("40066", "8383", "78342", 'What does "jai hind" mean?',
                 "What is the meaning of jai hind?", "1"),
                ("37735", "68372", "68373", "How do I use Twitter?", "How do I use Instagram?",
                 "0")],
    },
    "mnli": {
        "train": [mnli("0", "31193n", "government", "Conceptually cream skimming has two basic "
                       "dimensions - product and geography.", "Product and geography are what "
                       "make cream skimming work. ", "neutral", "neutral"),
                  mnli("1", "101457e", "telephone", "you know during the season and i guess at "
                       "at your level uh you lose them", "You lose the things to the following "
                       "level if the people recall.", "entailment", "entailment")],
        "dev_matched": [
            mnli("0", "63735n", "slate", "The new rights are nice enough",
                 "Everyone really likes the newest benefits ", "neutral", "entailment",
                 "neutral", "neutral", "neutral", "neutral"),
            mnli("1", "91383c", "government", "This site includes a list of all award winners.",
                 "The articles housed on the website are not able to be searched.",
                 *["contradiction"] * 6),
            mnli("2", "755e", "fiction", '"I\'ll be back," he said.', "He said he would return.",
                 *["entailment"] * 6)],
        "dev_mismatched": [
            mnli("0", "75290c", "letters", "Your contribution helped make it possible for us to "
                 "provide our students with a quality education.", "Your contributions were of "
                 "no help with our students' education.", *["contradiction"] * 6),
            mnli("1", "133794n", "verbatim", '"Look," he said.', "He said nothing else.",
                 "neutral", "neutral", "contradiction", "neutral", "neutral", "neutral")],
    },
    "qnli": {
        "train": [("0", "When did the third Digimon series begin?", "Unlike the two seasons "
                   "before it, Digimon Tamers takes a darker approach to its story.",
                   "not_entailment"),
                  ("1", "Which missile batteries often have individual launchers several "
                   "kilometres from one another?", "When MANPADS is operated by specialists, "
                   "batteries may have several dozen teams deploying separately.",
                   "not_entailment")],
        "dev": [("0", "What came into force after the new constitution was herald?", "As of "
                 "that day, the new constitution heralding the Second Republic came into "
                 "force.", "entailment"),
                ("1", 'What is the term "Mongol" used for?', "The Mongols ruled a vast empire.",
                 "not_entailment")],
    },
    "rte": {
        "train": [("0", "No Weapons of Mass Destruction Found in Iraq Yet.",
                   "Weapons of Mass Destruction Found in Iraq.", "not_entailment"),
                  ("1", "A place of sorrow, after Pope John Paul II died, became a place of "
                   "celebration.", "Pope Benedict XVI is the new leader of the Roman Catholic "
                   "Church.", "entailment")],
        "dev": [("0", "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung "
                 "cancer at age 44.", "Christopher Reeve had an accident.", "not_entailment"),
                ("1", '"Yes," said the minister, "the bridge is open."', "The bridge is open.",
                 "entailment")],
    },
    "wnli": {
        "train": [("0", "I stuck a pin through a carrot. When I pulled the pin out, it had a "
                   "hole.", "The carrot had a hole.", "1"),
                  ("1", "John couldn't see the stage with Billy in front of him because he is so "
                   "short.", "Billy is so short.", "0")],
        "dev": [("0", "The drain is clogged with hair. It has to be cleaned.",
                 "The hair has to be cleaned.", "0"),
                ("1", 'Jane said "I knocked on Susan\'s door but she did not answer."',
                 "Susan did not answer.", "1")],
    },
}
# Column positions (text_a, text_b, label), as transformers' GLUE processors index the TSVs.
POSITIONS = {"cola": (3, None, 1), "sst2": (0, None, 1), "mrpc": (3, 4, 0), "stsb": (7, 8, 9),
             "qqp": (3, 4, 5), "mnli": (8, 9, -1), "qnli": (1, 2, 3), "rte": (1, 2, 3),
             "wnli": (1, 2, 3)}
NLI = {"entailment": 0, "not_entailment": 1}
LABEL_IDS = {"qnli": NLI, "rte": NLI, "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2}}
# Hugging Face's nyu-mll/glue columns and split names.
HF_COLUMNS = {"cola": ("sentence", None), "sst2": ("sentence", None),
              "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
              "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
              "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
              "wnli": ("sentence1", "sentence2")}
HF_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
             "dev_mismatched": "validation_mismatched"}


def expected(task: str, split: str) -> list[Example]:
    a, b, lab = POSITIONS[task]
    out = []
    for i, row in enumerate(ROWS[task][split]):
        raw = row[lab]
        label = float(raw) if task == "stsb" else LABEL_IDS.get(task, {"0": 0, "1": 1})[raw]
        out.append(Example(i, row[a], None if b is None else row[b], label))
    return out


def tsv(header: tuple[str, ...] | None, rows: list[tuple[str, ...]], end: str = "\n") -> str:
    return "".join("\t".join(fields) + end for fields in ([header] if header else []) + rows)


def write_tsv_root(root: Path) -> Path:
    for task, splits in ROWS.items():
        folder = root / TASKS[task].folder
        folder.mkdir(parents=True)
        for split, rows in splits.items():
            header = HEADERS["mnli_dev" if task == "mnli" and split != "train" else task]
            end = "\r\n" if task == "qnli" else "\n"  # Windows line ends lose their "\r"
            (folder / f"{split}.tsv").write_text(tsv(header, rows, end), encoding="utf-8",
                                                 newline="")
    return root


def write_parquet(path: Path, task: str, examples: list[Example], label_type=None) -> None:
    a, b = HF_COLUMNS[task]
    cols = {a: [e.text_a for e in examples]}
    if b:
        cols[b] = [e.text_b for e in examples]
    label_type = label_type or (pa.float32() if task == "stsb" else pa.int64())
    cols["label"] = pa.array([e.label for e in examples], label_type)
    cols["idx"] = pa.array([e.idx for e in examples], pa.int32())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def write_parquet_root(root: Path) -> Path:
    """Each split in two shards (the first row, then the rest), read back in name order."""
    for task, splits in ROWS.items():
        for split in splits:
            rows = expected(task, split)
            for shard, part in enumerate((rows[:1], rows[1:])):
                write_parquet(root / task / f"{HF_SPLITS[split]}-0000{shard}-of-00002.parquet",
                              task, part)
    return root


@pytest.fixture(scope="module")
def tsv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tsv_root(tmp_path_factory.mktemp("glue_tsv"))


@pytest.fixture(scope="module")
def parquet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_parquet_root(tmp_path_factory.mktemp("glue_hf"))


# ---- loaders -----------------------------------------------------------------------------------

@pytest.mark.parametrize("task", list(TASKS))
def test_tsv_layout_reads_the_official_columns(tsv_root: Path, task: str) -> None:
    data = load_task(tsv_root, task)
    assert (data.layout, data.task.name) == ("tsv", task)
    assert data.source == str(tsv_root / TASKS[task].folder)
    assert data.train == expected(task, "train")
    assert list(data.dev) == list(TASKS[task].dev_splits)
    for split, examples in data.dev.items():
        assert examples == expected(task, split)


@pytest.mark.parametrize("task", list(TASKS))
def test_parquet_layout_gives_identical_examples(tsv_root: Path, parquet_root: Path,
                                                 task: str) -> None:
    official, hf = load_task(tsv_root, task, "tsv"), load_task(parquet_root, task)
    assert hf.layout == "parquet" and hf.source == str(parquet_root / task)
    assert hf.train == official.train and hf.dev == official.dev


def test_quotes_labels_and_spaces_come_through_verbatim(tsv_root: Path) -> None:
    cola = read_split(tsv_root, "cola", "train")
    assert cola[1] == Example(1, '"They drank the pub dry," he said they.', None, 0)
    assert read_split(tsv_root, "cola", "dev")[1].text_a == 'Mary said "leave" John.'
    sst2 = read_split(tsv_root, "sst2", "train")
    assert sst2[0].text_a == "hide new secretions from the parental units "
    assert sst2[1] == Example(1, '"the greatest musicians " ', None, 1)
    mrpc = read_split(tsv_root, "mrpc", "dev")
    assert mrpc[0].text_b == '" The foodservice pie business does not fit our long-term growth ' \
                             "strategy ."
    assert [e.label for e in mrpc] == [1, 0]
    assert [e.label for e in read_split(tsv_root, "stsb", "dev")] == [5.0, 0.4, 3.25]
    assert [e.label for e in read_split(tsv_root, "mnli", "dev_matched")] == [1, 2, 0]
    assert [e.label for e in read_split(tsv_root, "mnli", "dev_mismatched")] == [2, 1]
    qnli = read_split(tsv_root, "qnli", "dev")
    assert [e.label for e in qnli] == [0, 1]
    assert qnli[1].text_b == "The Mongols ruled a vast empire."  # no "\r" left
    assert [e.label for e in read_split(tsv_root, "wnli", "train")] == [1, 0]


def test_auto_layout_prefers_the_official_folder(tmp_path: Path, tsv_root: Path) -> None:
    write_parquet(tmp_path / "rte" / "validation-00000-of-00001.parquet", "rte",
                  [Example(7, "p", "h", 1)])
    assert read_split(tmp_path, "rte", "dev") == [Example(7, "p", "h", 1)]
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                                              "0\tx\ty\tentailment\n")
    assert read_split(tmp_path, "rte", "dev") == [Example(0, "x", "y", 0)]
    assert read_split(tmp_path, "rte", "dev", "parquet") == [Example(7, "p", "h", 1)]
    with pytest.raises(UserError, match=r"no folder .*CoLA nor .*cola"):
        load_task(tmp_path, "cola")
    with pytest.raises(UserError, match="no split 'dev'"):
        read_split(tsv_root, "mnli", "dev")


SST2_HEADER = "sentence\tlabel\n"
STSB_HEADER = "\t".join(HEADERS["stsb"]) + "\n"
STSB_ROW = "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA b.\tC d.\t{}\n"


@pytest.mark.parametrize(("task", "name", "text", "match"), [
    ("sst2", "dev.tsv", SST2_HEADER + "fine movie \t1\nno label here\n",
     r"SST-2/dev\.tsv:3: 1 tab-separated fields; expected 2 \(as the header\)"),
    ("sst2", "dev.tsv", SST2_HEADER + "\nfine\t1\nx\t1\textra\n",  # blank lines count
     r"SST-2/dev\.tsv:4: 3 tab-separated fields"),
    ("cola", "dev.tsv", "gj04\t1\t\tFine.\ngj04\t0\tBad.\n",
     r"CoLA/dev\.tsv:2: 3 tab-separated fields; expected 4"),
    ("qnli", "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tentailed\n",
     r"QNLI/dev\.tsv:2: label 'entailed'; expected one of entailment, not_entailment"),
    ("mnli", "dev_matched.tsv", tsv(HEADERS["mnli_dev"], [(*ROWS["mnli"]["dev_matched"][0][:-1],
                                                             "-")]),
     r"MNLI/dev_matched\.tsv:2: label '-'; expected one of entailment, neutral"),
    ("stsb", "dev.tsv", STSB_HEADER + STSB_ROW.format("3.0") + STSB_ROW.format("5.5"),
     r"STS-B/dev\.tsv:3: stsb label 5\.5; expected a similarity score from 0 to 5"),
    ("stsb", "dev.tsv", STSB_HEADER + STSB_ROW.format("high"),
     r"STS-B/dev\.tsv:2: label 'high' is not a number"),
    ("stsb", "dev.tsv", STSB_HEADER.replace("score", "similarity") + STSB_ROW.format("3.0"),
     r"STS-B/dev\.tsv:1: the header has no column score"),
    ("mrpc", "dev.tsv", "", r"MRPC/dev\.tsv: empty file"),
    ("wnli", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n", r"WNLI/dev\.tsv: no example"),
])
def test_malformed_tsv_names_file_and_line(tmp_path: Path, task: str, name: str, text: str,
                                           match: str) -> None:
    folder = tmp_path / TASKS[task].folder
    folder.mkdir()
    (folder / name).write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=match):
        read_split(tmp_path, task, name.removesuffix(".tsv"))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                                                "0\ta\tb\tentailment\n")
    with pytest.raises(UserError, match=r"RTE/dev\.tsv: file not found"):
        load_task(tmp_path, "rte")
    (tmp_path / "RTE" / "dev.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n\xff\n")
    with pytest.raises(UserError, match=r"RTE/dev\.tsv: cannot read it as UTF-8"):
        read_split(tmp_path, "rte", "dev")
    with pytest.raises(UserError, match=r"no folder .*QQP; expected the official GLUE folder"):
        read_split(tmp_path, "qqp", "dev", "tsv")


def test_malformed_parquet_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "mrpc" / "validation-00000-of-00001.parquet"
    write_parquet(path, "mrpc", [Example(0, "a", "b", 1), Example(1, "c", "d", -1)])
    with pytest.raises(UserError, match=r"validation-00000-of-00001\.parquet: row 1: label -1 "
                                        r"\(unlabelled"):
        read_split(tmp_path, "mrpc", "dev")
    write_parquet(path, "mrpc", [Example(0, "a", "b", 1), Example(0, "c", "d", 0)])
    with pytest.raises(UserError, match=r"parquet: row 1: idx 0"):
        read_split(tmp_path, "mrpc", "dev")
    write_parquet(path, "sst2", [Example(0, "a", None, 1)])  # sst2's columns: no sentence1
    with pytest.raises(UserError, match=r"parquet: no column sentence1, sentence2"):
        read_split(tmp_path, "mrpc", "dev")
    write_parquet(tmp_path / "stsb" / "validation-0.parquet", "stsb",
                  [Example(0, "a", "b", 5.5)])
    with pytest.raises(UserError, match=r"parquet: row 0: stsb label 5\.5"):
        read_split(tmp_path, "stsb", "dev")
    with pytest.raises(UserError, match=r"stsb: no train-\*\.parquet file"):
        read_split(tmp_path, "stsb", "train")
    (tmp_path / "stsb" / "train-0.parquet").write_text("not parquet")
    with pytest.raises(UserError, match=r"train-0\.parquet: cannot read it as parquet"):
        read_split(tmp_path, "stsb", "train")


# ---- metrics -----------------------------------------------------------------------------------

def class_cases(k: int, n_cases: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random label/prediction vectors, and the degenerate ones: one class only, perfect,
    inverted, a single example."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        n = int(rng.integers(1, 60))
        y = rng.integers(0, k, n)
        skew = rng.random()
        p = np.where(rng.random(n) < skew, y, rng.integers(0, k, n))
        cases.append((y, p))
    y = rng.integers(0, k, 20)
    cases += [(y, np.zeros(20, int)), (y, np.ones(20, int)), (np.zeros(9, int), y[:9]),
              (np.zeros(5, int), np.zeros(5, int)), (np.ones(5, int), np.ones(5, int)),
              (y, y), (y, (k - 1) - y), (np.array([1]), np.array([0]))]
    return cases


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn on one class
def test_classification_metrics_match_scikit_learn() -> None:
    for y, p in class_cases(2, 300, seed=0):
        mrpc, cola = split_metrics("mrpc", y, p), split_metrics("cola", y.tolist(), p.tolist())
        assert mrpc["acc"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert mrpc["f1"] == pytest.approx(f1_score(y, p, labels=[0, 1], zero_division=0.0),
                                           abs=1e-12)
        assert cola["mcc"] == pytest.approx(matthews_corrcoef(y, p), abs=1e-12)
        assert set(mrpc) == {"acc", "f1"} and set(cola) == {"mcc"}
    for y, p in class_cases(3, 100, seed=1):
        assert split_metrics("mnli", y, p) == {"acc": pytest.approx(accuracy_score(y, p))}


def test_classification_metrics_by_hand() -> None:
    # TP 1, FN 1, TN 2, FP 0
    y, p = [1, 1, 0, 0], [1, 0, 0, 0]
    assert split_metrics("qqp", y, p) == {"acc": 0.75, "f1": pytest.approx(2 / 3)}
    assert split_metrics("cola", y, p)["mcc"] == pytest.approx(2 / np.sqrt(12))
    assert split_metrics("cola", [0, 1, 0], [1, 1, 1])["mcc"] == 0.0  # one class predicted
    assert split_metrics("mrpc", [0, 0], [0, 0])["f1"] == 0.0  # no positive true or predicted
    assert split_metrics("cola", np.array([1.0, 0.0]), np.array([1.0, 0.0]))["mcc"] == 1.0
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        split_metrics("sst2", [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"class ids 0\.\.1"):
        split_metrics("sst2", [0, 1], [0, 2])
    with pytest.raises(ValueError, match=r"class ids 0\.\.2"):
        split_metrics("mnli", [0, 1], [0, 0.5])
    with pytest.raises(ValueError, match="no examples"):
        split_metrics("rte", [], [])


def test_regression_metrics_match_scipy() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(2, 80))
        y = np.round(rng.uniform(0, 5, n) * 5) / 5  # steps of 0.2: ties, as STS-B has
        p = y + rng.normal(0, rng.uniform(0.1, 3), n)
        if rng.random() < 0.3:
            p = np.round(p)  # ties in the predictions too: average ranks matter
        got = split_metrics("stsb", y.tolist(), p.tolist())
        assert got["pearson"] == pytest.approx(pearsonr(y, p).statistic, abs=1e-12)
        assert got["spearman"] == pytest.approx(spearmanr(y, p).statistic, abs=1e-12)
    assert split_metrics("stsb", [1.0, 2.0, 3.0], [0.0, 4.0, 9.0]) == {
        "pearson": pytest.approx(9 / np.sqrt(2 * 122 / 3)), "spearman": 1.0}
    constant = split_metrics("stsb", [1.0, 2.0, 3.0], [2.5, 2.5, 2.5])
    assert np.isnan(constant["pearson"]) and np.isnan(constant["spearman"])
    with pytest.raises(ValueError, match="at least 2 finite"):
        split_metrics("stsb", [1.0, 2.0], [1.0, float("nan")])


def test_evaluate_task_headline_scores() -> None:
    y, p = [1, 1, 0, 0], [1, 0, 0, 0]
    assert evaluate_task("cola", {"dev": (y, p)}) == {"mcc": pytest.approx(2 / np.sqrt(12)),
                                                      "score": pytest.approx(2 / np.sqrt(12))}
    assert evaluate_task("mrpc", {"dev": (y, p)}) == {"acc": 0.75, "f1": pytest.approx(2 / 3),
                                                      "score": 0.75}
    stsb = evaluate_task("stsb", {"dev": ([1.0, 2.0, 3.0], [0.0, 4.0, 9.0])})
    assert stsb["score"] == stsb["spearman"] == 1.0
    for name, spec in TASKS.items():
        dev = {s: ([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) if spec.is_regression else ([0, 1], [0, 1])
               for s in spec.dev_splits}
        assert list(evaluate_task(name, dev)) == [*spec.metrics, "score"]
        assert spec.score in spec.metrics
    with pytest.raises(ValueError, match="expected dev"):
        evaluate_task("sst2", {"dev_matched": ([0], [0])})


def test_mnli_concatenates_matched_and_mismatched() -> None:
    matched = ([0, 1, 2], [0, 1, 0])  # 2 of 3
    mismatched = ([2, 2, 1, 0, 1], [2, 0, 0, 1, 2])  # 1 of 5
    got = evaluate_task("mnli", {"dev_mismatched": mismatched, "dev_matched": matched})
    assert got == {"acc": 3 / 8, "acc_m": pytest.approx(2 / 3), "acc_mm": 1 / 5, "score": 3 / 8}
    assert got["acc"] == pytest.approx((3 * got["acc_m"] + 5 * got["acc_mm"]) / 8)
    with pytest.raises(ValueError, match="expected dev_matched, dev_mismatched"):
        evaluate_task("mnli", {"dev_matched": matched})
    with pytest.raises(ValueError, match="dev_matched: 3 labels but 2 predictions"):
        evaluate_task("mnli", {"dev_matched": ([0, 1, 2], [0, 1]), "dev_mismatched": ([0], [1, 0])})


def test_glue_score_is_the_papers_mean() -> None:
    vanilla = dict(zip(PAPER_TASKS, (85.87, 54.66, 83.70, 92.45, 88.38, 89.57, 82.40),
                       strict=True))  # CWT paper, Table 1, in its column order
    assert round(glue_score(vanilla, PAPER_TASKS), 2) == 82.43
    assert glue_score({"cola": 0.5, "rte": 0.7, "sst2": 0.0}, ["cola", "rte"]) == 0.6
    with pytest.raises(ValueError, match="no score for mnli"):
        glue_score({t: 1.0 for t in PAPER_TASKS[:-1]}, PAPER_TASKS)


# ---- predictions and the command line ----------------------------------------------------------

def write_predictions(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_predictions(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.jsonl", [
        {"split": "dev", "idx": 1, "prediction": 0, "label": 1},
        {"split": "dev", "idx": 0, "prediction": 2.5}])
    assert read_predictions(path) == {"dev": {1: 0, 0: 2.5}}
    for line, match in [
        ('{"split": "dev", "idx": 0, "prediction": 1}',
         r"p\.jsonl:3: a second prediction for split 'dev' idx 0 \(the first is on line 2"),
        ('{"split": "dev", "idx": true, "prediction": 1}', r"p\.jsonl:3: idx True"),
        ('{"split": "dev", "idx": 5, "prediction": NaN}', r"p\.jsonl:3: prediction nan"),
        ('{"split": "dev", "idx": 5}', r"p\.jsonl:3: prediction None"),
        ('{"idx": 5, "prediction": 1}', r"p\.jsonl:3: split None"),
        ("[1, 2]", r"p\.jsonl:3: a JSON list"),
        ("{oops", r"p\.jsonl:3: not JSON"),
    ]:
        path.write_text('{"split": "dev", "idx": 1, "prediction": 0}\n'
                        '{"split": "dev", "idx": 0, "prediction": 1}\n' + line + "\n")
        with pytest.raises(UserError, match=match):
            read_predictions(path)
    path.write_text("\n")
    with pytest.raises(UserError, match=r"p\.jsonl: no prediction"):
        read_predictions(path)
    with pytest.raises(UserError, match=r"missing\.jsonl: file not found"):
        read_predictions(tmp_path / "missing.jsonl")


def mrpc_root(root: Path, labels: list[int]) -> Path:
    rows = [(str(y), str(i), str(i + 1), f'Sentence "{i}" .', f"Other {i} .")
            for i, y in enumerate(labels)]
    (root / "MRPC").mkdir(parents=True)
    (root / "MRPC" / "dev.tsv").write_text(tsv(HEADERS["mrpc"], rows), encoding="utf-8")
    return root


def test_cli_scores_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels = [1, 0, 1, 1, 0, 1, 1, 0, 0, 1]
    preds = [1, 1, 1, 0, 0, 1, 1, 0, 1, 1]
    root = mrpc_root(tmp_path / "glue", labels)
    path = write_predictions(tmp_path / "samples_glue_mrpc.jsonl", [
        {"split": "dev", "idx": i, "prediction": p, "label": y}
        for i, (y, p) in reversed(list(enumerate(zip(labels, preds, strict=True))))])
    out_json = tmp_path / "out" / "mrpc.json"
    assert main(["eval", "glue", "--data", str(root), "--task", "mrpc", "--predictions",
                 str(path), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    acc, f1 = accuracy_score(labels, preds), f1_score(labels, preds)
    assert "dev 10 examples" in out and "tsv data" in out
    assert f"mrpc.acc = {acc:.4f}\n" in out and f"mrpc.f1 = {f1:.4f}\n" in out
    assert f"mrpc.score = {acc:.4f}  (acc" in out
    report = json.loads(out_json.read_text())
    assert report["task"] == "mrpc" and report["layout"] == "tsv"
    assert report["n"] == {"dev": 10} and report["score_metric"] == "acc"
    assert report["metrics"] == {"acc": pytest.approx(acc), "f1": pytest.approx(f1),
                                 "score": pytest.approx(acc)}


def test_cli_mnli_on_parquet(parquet_root: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    path = write_predictions(tmp_path / "p.jsonl", [
        {"split": "dev_matched", "idx": 0, "prediction": 1},  # gold 1, 2, 0
        {"split": "dev_matched", "idx": 1, "prediction": 2},
        {"split": "dev_matched", "idx": 2, "prediction": 1},
        {"split": "dev_mismatched", "idx": 0, "prediction": 0},  # gold 2, 1
        {"split": "dev_mismatched", "idx": 1, "prediction": 1.0}])
    out_json = tmp_path / "mnli.json"
    assert main(["eval", "glue", "--data", str(parquet_root), "--task", "mnli", "--layout",
                 "parquet", "--predictions", str(path), "--json", str(out_json)]) == 0
    assert "mnli.acc = 0.6000\n" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["layout"] == "parquet" and report["n"] == {"dev_matched": 3,
                                                             "dev_mismatched": 2}
    assert report["metrics"] == {"acc": 0.6, "acc_m": pytest.approx(2 / 3), "acc_mm": 0.5,
                                 "score": 0.6}


@pytest.mark.parametrize("task", list(TASKS))
def test_cli_every_task_gold_as_predictions_scores_1(tsv_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     task: str) -> None:
    path = write_predictions(tmp_path / "p.jsonl", [
        {"split": split, "idx": e.idx, "prediction": e.label}
        for split in TASKS[task].dev_splits for e in expected(task, split)])
    assert main(["eval", "glue", "--data", str(tsv_root), "--task", task, "--predictions",
                 str(path)]) == 0
    out = capsys.readouterr().out
    for metric in (*TASKS[task].metrics, "score"):
        assert f"{task}.{metric} = 1.0000" in out


def test_cli_stsb_nan_is_null(tsv_root: Path, tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.jsonl", [
        {"split": "dev", "idx": i, "prediction": 2.5} for i in range(3)])
    out_json = tmp_path / "stsb.json"
    assert main(["eval", "glue", "--data", str(tsv_root), "--task", "stsb", "--predictions",
                 str(path), "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["metrics"] == {"pearson": None, "spearman": None,
                                                          "score": None}


@pytest.mark.parametrize(("records", "match"), [
    ([{"split": "dev", "idx": i, "prediction": 1} for i in range(10) if i != 7],
     r"p\.jsonl: 1 of the 10 dev examples have no prediction \(idx 7\)"),
    ([{"split": "dev", "idx": i, "prediction": 1} for i in range(12)],
     r"p\.jsonl: 2 dev predictions for idx the dev data does not have \(10, 11\)"),
    ([{"split": "dev", "idx": i, "prediction": 0.5 * i} for i in range(10)],
     r"p\.jsonl: dev idx 1: prediction 0\.5 \(8 such\); expected a mrpc class id 0\.\.1"),
    ([{"split": "test", "idx": 0, "prediction": 1}],
     r"p\.jsonl: predictions for split 'test'; expected only mrpc's dev split"),
])
def test_cli_bad_predictions_exit_2_without_traceback(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      records: list[dict], match: str) -> None:
    root = mrpc_root(tmp_path / "glue", [0, 1] * 5)
    path = write_predictions(tmp_path / "p.jsonl", records)
    assert main(["eval", "glue", "--data", str(root), "--task", "mrpc", "--predictions",
                 str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(match, err)


# ---- the evaluator -----------------------------------------------------------------------------

def test_the_evaluator_is_registered_and_imports_no_torch() -> None:
    from bench.evals.registry import get_evaluator

    assert isinstance(get_evaluator("glue"), GlueEvaluator)
    assert EVALUATOR.needs is PairClassifier and EVALUATOR.config_model is GlueEvalConfig
    code = "import sys, bench.evals.glue; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_defaults_are_the_papers_and_tasks_are_checked() -> None:
    cfg = GlueEvalConfig(path="glue")
    assert cfg.tasks == ["mrpc", "cola", "stsb", "sst2", "qnli", "qqp", "mnli"]
    assert (cfg.finetune.epochs, cfg.finetune.batch_size, cfg.finetune.optim.lr) == (10, 32, 1e-5)
    assert cfg.finetune.selection == "best" and cfg.limit_train is None
    with pytest.raises(ValueError, match="unknown GLUE task"):
        GlueEvalConfig(path="glue", tasks=["sst2", "imdb"])
    with pytest.raises(ValueError, match="distinct"):
        GlueEvalConfig(path="glue", tasks=["sst2", "sst2"])
    with pytest.raises(ValueError):
        FinetuneConfig(max_seq_len=2)


def test_inputs_name_the_folder_and_a_missing_task_fails_the_check(tsv_root: Path) -> None:
    cfg = GlueEvalConfig(path=str(tsv_root), tasks=["sst2", "mnli"])
    assert EVALUATOR.inputs(cfg, None) == {"path": str(tsv_root)}
    EVALUATOR.check(cfg, None)
    with pytest.raises(UserError, match="cola: no folder"):
        EVALUATOR.check(GlueEvalConfig(path=str(tsv_root), tasks=["cola"], layout="parquet"),
                        "/elsewhere")


def test_higher_is_better() -> None:
    better = {"score": True, "score_best": True, "sst2.acc": True, "mnli.acc_mm": True,
              "cola.mcc": True, "stsb.spearman": True, "mrpc.f1": True, "sst2.score_last": True,
              "finetune_flops": False, "qqp.finetune_seconds": False, "sst2.epoch": None}
    assert {m: EVALUATOR.higher_is_better(m) for m in better} == better


def test_epoch_selection_best_or_last() -> None:
    assert _select([0.5, 0.7, 0.7, 0.6], "best") == 1
    assert _select([0.5, 0.7, 0.7, 0.6], "last") == 3
    assert _select([math.nan, 0.1], "best") == 1


@dataclass
class ScriptedClassifier:
    """Predicts the gold labels in the epochs listed in `right`, class 0 otherwise: what the
    evaluator does with a classifier's epochs, without training one."""

    right: set[int]
    calls: list[tuple[str, int]] = field(default_factory=list)

    def finetune(self, task: TaskSpec, train: Sequence[Example],
                 dev: Mapping[str, Sequence[Example]], settings: FinetuneConfig, *, seed: int,
                 scratch: Path,
                 score_epoch: Callable[[int, dict[str, list[float]]], dict[str, float]]
                 ) -> Finetuned:
        self.calls.append((task.name, len(train)))
        scratch.mkdir(parents=True)
        epochs = [score_epoch(n, {s: [x.label if n in self.right else 0 for x in examples]
                                  for s, examples in dev.items()})
                  for n in range(1, settings.epochs + 1)]
        return Finetuned(epochs, steps=2 * settings.epochs, flops=1e6, tokens=10, seconds=0.5)


@pytest.mark.parametrize(("selection", "epoch"), [("best", 2), ("last", 3)])
def test_the_evaluator_selects_an_epoch_and_keeps_each_tasks_result(
        tsv_root: Path, tmp_path: Path, selection: str, epoch: int) -> None:
    cfg = GlueEvalConfig(path=str(tsv_root), tasks=["sst2", "mnli"], limit_train=1,
                         finetune=FinetuneConfig(epochs=3, selection=selection))
    classifier = ScriptedClassifier(right={2})
    assert isinstance(classifier, PairClassifier)
    setting = EvalSetting(workdir=tmp_path / "glue", log=logging.getLogger("test"), seed=0)
    result = EVALUATOR.evaluate(cfg, classifier, setting)
    assert sorted(result.metrics) == sorted(EVALUATOR.metrics(cfg))  # what a report may name
    assert classifier.calls == [("sst2", 1), ("mnli", 1)]  # train cut to limit_train
    m = result.metrics
    last = {t: evaluate_task(t, {s: ([x.label for x in expected(t, s)], [0] * len(ROWS[t][s]))
                                 for s in TASKS[t].dev_splits})["score"] for t in cfg.tasks}
    assert (m["sst2.epoch"], m["mnli.epoch"]) == (epoch, epoch)
    for task in cfg.tasks:
        assert m[f"{task}.score"] == (1.0 if epoch == 2 else last[task])
    assert m["sst2.score_best"] == 1.0 and m["sst2.score_last"] == last["sst2"]
    assert m["score"] == glue_score({t: m[f"{t}.score"] for t in cfg.tasks}, cfg.tasks)
    assert m["score_best"] == 1.0 and m["score_last"] == glue_score(last, cfg.tasks)
    assert m["finetune_steps"] == 12.0 and m["finetune_flops"] == 2e6
    assert m["sst2.finetune_tokens"] == 10.0 and m["mnli.finetune_seconds"] == 0.5
    assert result.provenance == {"epoch_selection": selection}
    for task in cfg.tasks:
        folder = tmp_path / "glue" / task
        assert sorted(p.name for p in folder.iterdir()) == [
            "dev_epoch1.jsonl", "dev_epoch2.jsonl", "dev_epoch3.jsonl", "result.json"]
        rows = result.samples[task]
        assert len(rows) == sum(len(ROWS[task][s]) for s in TASKS[task].dev_splits)
        assert [r["prediction"] for r in rows] == (
            [r["label"] for r in rows] if epoch == 2 else [0] * len(rows))
    # Finished tasks are read back, not fine-tuned again.
    assert EVALUATOR.evaluate(cfg, classifier, setting) == result
    assert len(classifier.calls) == 2
