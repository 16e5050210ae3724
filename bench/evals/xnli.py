"""XNLI (Conneau et al., 2018) as the CWT paper reports it (Table 5): a pretrained multilingual
encoder fine-tuned on natural language inference and tested in 15 languages, by two protocols.
`zero_shot` fine-tunes once on English (MultiNLI) and tests every language; `translate_train`
fine-tunes on each language's machine-translated MultiNLI (XNLI-MT; English: MultiNLI itself) and
tests that language. The model is fine-tuned behind a `PairClassifier`, with GLUE's machinery
(bench/evals/glue.py): each epoch's predictions kept, the reported epoch selected, a finished
fine-tuning never redone. No model code and no torch here.

Layouts (`layout: auto` takes the official one where its folder exists, else the parquet one):
- official: `XNLI-1.0/xnli.dev.tsv` and `xnli.test.tsv` (all languages in one TSV with a header;
  columns `language`, `gold_label`, `sentence1`, `sentence2` used), `multinli_1.0/
  multinli_1.0_train.jsonl` (or `.txt`, a TSV with a header) for English training, and
  `XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv` (columns `premise`, `hypo`, `label`) for the
  other languages' training. The three folders are found under `path` by the names the official
  archives unpack to, or given one by one (`xnli`, `multinli`, `xnli_mt`).
- Hugging Face's `xnli` parquet: `<path>/<lang>/train-*.parquet`, `validation-*`, `test-*`, with
  `premise`, `hypothesis`, `label`.

Choices, where the protocol is silent or the sources differ:
- TSVs are read as GLUE's are (quoting disabled: a `"` is part of the sentence; UTF-8, a leading
  byte-order mark dropped; blank lines skipped), every row with as many fields as the header.
- Labels are Hugging Face's class ids: 0 entailment, 1 neutral, 2 contradiction. XNLI-MT spells
  the last one `contradictory` in some releases; both spellings are read, anything else refused.
  MultiNLI rows with gold label `-` (no annotator majority) are skipped, as its official loaders
  do; XNLI's own rows must all be labelled.
- `idx` is the 0-based row of a language within its split, in file order (the order Hugging
  Face's loader keeps), so both layouts give the same examples; training rows likewise count the
  examples kept.
- `train_examples: N` trains on the first N examples of each training file, in file order.
- zero_shot selects its epoch on English dev accuracy, as Conneau et al. (2018) do for
  cross-lingual transfer (no target-language data is seen); translate_train selects on the
  target language's own dev accuracy. Test accuracy at the selected epoch is reported.
- Metrics are fractions: `<protocol>.<lang>.acc` (test), `<protocol>.<lang>.dev_acc`, and their
  unweighted means over the configured languages, `<protocol>.avg` and `<protocol>.dev_avg`;
  the selected epoch (`zero_shot.epoch`, `translate_train.<lang>.epoch`) and the fine-tuning
  costs (`finetune_*`, also per protocol). Accuracy is GLUE MNLI's (the same three classes).
- Per-example predictions of the selected epochs are kept as samples, one file per protocol
  (`samples_xnli_<protocol>.jsonl`, splits named `dev.<lang>` and `test.<lang>`); every epoch's
  stay in `<protocol>/[<lang>/]dev_epoch<n>.jsonl`. `bench eval xnli` rescores such a file.
- translate_train's English is zero_shot's fine-tuning when both run (the same training data,
  seed and selection split): its English rows are read from it, not trained again, and it is
  counted once in the total `finetune_*`.
"""

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from bench.errors import UserError
from bench.evals.adapters import Example, FinetuneConfig, PairClassifier, TaskSpec
from bench.evals.evaluator import EvalResult, EvalSetting, Evaluator, PerExample
from bench.evals.finetune_select import (
    TaskOutcome,
    cost_names,
    finetune_and_select,
    finetune_costs,
    finetuned_direction,
    recorded_outcome,
)
from bench.evals.glue import LAYOUTS, iter_tsv, parquet_label, read_parquet_table, split_metrics
from bench.evals.io import json_records, shown
from bench.schema import InputPath, Int, Strict
from bench.util.atomic import enter_dir

LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi",
             "zh")
ProtocolName = Literal["zero_shot", "translate_train"]
PROTOCOLS: tuple[ProtocolName, ...] = ("zero_shot", "translate_train")
CLASSES = ("entailment", "neutral", "contradiction")
EVAL_SPLITS = ("dev", "test")
_SPELLINGS = {c: i for i, c in enumerate(CLASSES)}
_MT_SPELLINGS = {**_SPELLINGS, "contradictory": 2}
_UNLABELLED = "-"  # MultiNLI's gold label where the annotators had no majority
_HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
# Official archive folders under `path`, by config field.
_FOLDERS = {"xnli": "XNLI-1.0", "multinli": "multinli_1.0", "xnli_mt": "XNLI-MT-1.0"}
_MULTINLI_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_train.txt")
# The TSV columns read: text_a, text_b, label.
_XNLI_COLUMNS = ("sentence1", "sentence2", "gold_label")
_MT_COLUMNS = ("premise", "hypo", "label")
_PARQUET_COLUMNS = ("premise", "hypothesis", "label")
SPEC = TaskSpec(name="xnli", folder=_FOLDERS["xnli"], num_labels=len(CLASSES),
                dev_splits=(), metrics=("acc", "dev_acc"), score="acc")


class XnliEvalConfig(Strict):
    """XNLI test accuracy per language after fine-tuning by each protocol."""

    path: InputPath | None = Field(None, description="folder holding XNLI-1.0/, multinli_1.0/ and "
                             "XNLI-MT-1.0/ as the official archives unpack, or Hugging Face's "
                             "xnli parquet (<lang>/train-*.parquet, ...)")
    xnli: InputPath | None = Field(None, description="folder of xnli.dev.tsv and xnli.test.tsv "
                             "(default <path>/XNLI-1.0)")
    multinli: InputPath | None = Field(None, description="folder of multinli_1.0_train.jsonl "
                                       "or .txt (default <path>/multinli_1.0)")
    xnli_mt: InputPath | None = Field(None, description="folder holding multinli/multinli.train."
                                "<lang>.tsv (default <path>/XNLI-MT-1.0)")
    layout: Literal["auto", "tsv", "parquet"] = "auto"
    languages: list[str] = Field(list(LANGUAGES), min_length=1,
                                 description="languages tested and averaged (default all 15)")
    protocols: list[ProtocolName] = Field(list(PROTOCOLS), min_length=1)
    finetune: FinetuneConfig = FinetuneConfig()
    train_examples: Int | None = Field(None, gt=0, description="first N training examples only")
    proxy: bool = Field(False, description="the data is a stand-in, labelled so in reports")

    @model_validator(mode="after")
    def _consistent(self) -> "XnliEvalConfig":
        unknown = [lang for lang in self.languages if lang not in LANGUAGES]
        if unknown:
            raise ValueError(f"unknown XNLI language(s) {unknown}; known: {', '.join(LANGUAGES)}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError("languages must be distinct")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError("protocols must be distinct")
        if "zero_shot" in self.protocols and "en" not in self.languages:
            raise ValueError("zero_shot selects its epoch on English dev accuracy: languages "
                             "must include 'en'")
        if self.path is None:
            needed = ["xnli"] + (["multinli"] if "en" in self.train_languages else []) + (
                ["xnli_mt"] if set(self.train_languages) - {"en"} else [])
            missing = [f for f in needed if getattr(self, f) is None]
            if self.layout == "parquet" or missing:
                raise ValueError("give 'path' (the folder holding the data)"
                                 + (f" or {', '.join(missing)}" if self.layout != "parquet"
                                    else " for the parquet layout"))
        return self

    @property
    def train_languages(self) -> list[str]:
        """The languages fine-tuned on: English for zero_shot, each language for
        translate_train."""
        own = self.languages if "translate_train" in self.protocols else []
        return list(dict.fromkeys((["en"] if "zero_shot" in self.protocols else []) + own))


# ---- where the files are -----------------------------------------------------------------------

def _folder(path: str | None, given: str | None, field: str) -> Path:
    """A TSV folder: as given, else the official archive's folder under `path`."""
    if given is not None:
        return Path(given)
    assert path is not None  # the config requires one of them
    return Path(path) / _FOLDERS[field]


def find_layout(path: str | None, xnli: str | None, layout: str = "auto") -> str:
    """"tsv" or "parquet": the official XNLI-1.0 folder, or Hugging Face's per-language folders
    under `path`; "auto" prefers the official folder."""
    if layout not in LAYOUTS:
        raise UserError(f"layout {shown(layout)}: expected one of {', '.join(LAYOUTS)}")
    tsv = _folder(path, xnli, "xnli") if xnli is not None or path is not None else None
    if layout != "parquet" and tsv is not None and tsv.is_dir():
        return "tsv"
    if layout != "tsv" and path is not None and any(
            (Path(path) / lang).is_dir() for lang in LANGUAGES):
        return "parquet"
    expected = {"tsv": f"the official folder {tsv} (with xnli.dev.tsv, xnli.test.tsv)",
                "parquet": f"Hugging Face's xnli folders {Path(path or '.') / '<lang>'}"}
    kinds = ("tsv", "parquet") if layout == "auto" else (layout,)
    raise UserError("xnli: no data; expected " + " or ".join(expected[k] for k in kinds))


def _multinli_file(folder: Path) -> Path:
    """MultiNLI's train file: the JSON lines where both are there, else the TSV."""
    for name in _MULTINLI_FILES:
        if (folder / name).is_file():
            return folder / name
    return folder / _MULTINLI_FILES[0]


def _train_file(config: XnliEvalConfig, lang: str) -> Path:
    """The official file a language is fine-tuned on: MultiNLI for English, XNLI-MT else."""
    if lang == "en":
        return _multinli_file(_folder(config.path, config.multinli, "multinli"))
    return _folder(config.path, config.xnli_mt, "xnli_mt") / "multinli" / (
        f"multinli.train.{lang}.tsv")


# ---- reading the official TSVs and MultiNLI's JSON lines ---------------------------------------

def _label(raw: Any, spellings: Mapping[str, int], where: str, field: str) -> int:
    if not isinstance(raw, str) or raw not in spellings:
        raise UserError(f"{where}: {field} {shown(raw)}; expected one of {', '.join(spellings)}")
    return spellings[raw]


def _tsv_table(path: Path, columns: Sequence[str], expected: str
               ) -> Iterator[tuple[str, list[str], tuple[int, ...]]]:
    """(where, fields, positions of `columns`) per data row, the header checked for `columns`
    and every row for the header's width."""
    rows = iter_tsv(path, expected)
    line, header = next(rows, (0, []))
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path}:{line or 1}: the header has no column {', '.join(missing)}; "
                        f"expected {expected} with a header naming {', '.join(columns)}")
    positions = tuple(header.index(c) for c in columns)
    for line, fields in rows:
        if len(fields) != len(header):
            raise UserError(f"{path}:{line}: {len(fields)} tab-separated fields; expected "
                            f"{len(header)} (as the header)")
        yield f"{path}:{line}", fields, positions


def read_xnli_tsv(path: Path, languages: Sequence[str]) -> dict[str, list[Example]]:
    """language -> its examples, in file order, from XNLI-1.0's `xnli.dev.tsv` or
    `xnli.test.tsv`; every language asked for must have rows."""
    found: dict[str, list[Example]] = {lang: [] for lang in languages}
    for where, fields, (language, a, b, label) in _tsv_table(
            path, ("language", *_XNLI_COLUMNS), "XNLI-1.0's split file"):
        lang = fields[language]
        if lang not in LANGUAGES:
            raise UserError(f"{where}: language {shown(lang)}; expected one of "
                            f"{', '.join(LANGUAGES)}")
        if lang in found:
            rows = found[lang]
            rows.append(Example(len(rows), fields[a], fields[b],
                                _label(fields[label], _SPELLINGS, where, "gold_label")))
    absent = [lang for lang, rows in found.items() if not rows]
    if absent:
        raise UserError(f"{path}: no rows for language {', '.join(map(repr, absent))}; expected "
                        "XNLI-1.0's rows of every language configured")
    return found


def iter_xnli_mt(path: Path, lang: str) -> Iterator[Example]:
    """A language's machine-translated MultiNLI train (XNLI-MT-1.0), one example at a time."""
    expected = f"XNLI-MT-1.0's machine-translated MultiNLI train for language {lang!r}"
    n = 0
    for where, fields, (a, b, label) in _tsv_table(path, _MT_COLUMNS, expected):
        yield Example(n, fields[a], fields[b], _label(fields[label], _MT_SPELLINGS, where,
                                                      "label"))
        n += 1
    _nonempty(n, path, expected)


def read_xnli_mt(path: Path, lang: str, limit: int | None = None) -> list[Example]:
    """`iter_xnli_mt`'s first `limit` examples (rows past them are not read)."""
    return list(islice(iter_xnli_mt(path, lang), limit))


def _multinli_rows(path: Path, expected: str) -> Iterator[tuple[str, Any, Any, Any]]:
    """(where, sentence1, sentence2, gold_label) per row of MultiNLI's JSON lines or TSV."""
    if path.suffix == ".jsonl":
        for n, record in json_records(path, expected):
            yield f"{path}:{n}", record.get("sentence1"), record.get("sentence2"), record.get(
                "gold_label")
        return
    for where, fields, (a, b, label) in _tsv_table(path, _XNLI_COLUMNS, expected):
        yield where, fields[a], fields[b], fields[label]


def iter_multinli(path: Path) -> Iterator[Example]:
    """MultiNLI's train (`multinli_1.0_train.jsonl` or `.txt`), one labelled example at a time;
    rows labelled '-' are skipped."""
    expected = "MultiNLI 1.0's train file (JSON lines or TSV with gold_label, sentence1, sentence2)"
    n = 0
    for where, a, b, raw in _multinli_rows(path, expected):
        if raw == _UNLABELLED:
            continue
        label = _label(raw, _SPELLINGS, where, "gold_label")
        if not isinstance(a, str) or not isinstance(b, str):
            raise UserError(f"{where}: sentence1 {shown(a)}, sentence2 {shown(b)}; expected "
                            "two strings")
        yield Example(n, a, b, label)
        n += 1
    _nonempty(n, path, expected)


def read_multinli(path: Path, limit: int | None = None) -> list[Example]:
    """`iter_multinli`'s first `limit` examples (rows past them are not read)."""
    return list(islice(iter_multinli(path), limit))


def _nonempty(count: int, where: Path, expected: str) -> None:
    """A training source that ended without an example is refused."""
    if not count:
        raise UserError(f"{where}: no labelled example; expected {expected}")


# ---- Hugging Face's parquet layout ------------------------------------------------------------

def iter_parquet_split(root: Path, lang: str, split: str) -> Iterator[Example]:
    """One language's split ("train", "dev", "test") from Hugging Face's xnli parquet
    (`<root>/<lang>/<split>-*.parquet`, shards in name order), one example at a time (one
    shard in memory)."""
    folder, hf = root / lang, _HF_SPLITS[split]
    expected = f"Hugging Face's xnli layout ({lang}/{hf}-*.parquet) for language {lang!r}"
    files = sorted(folder.glob(f"{hf}-*.parquet"))
    if not files:
        raise UserError(f"{folder}: no {hf}-*.parquet file; expected {expected}")
    n = 0
    for path in files:
        table = read_parquet_table(path, _PARQUET_COLUMNS)
        a, b, labels = (table.column(c).to_pylist() for c in _PARQUET_COLUMNS)
        for row, (x, y, label) in enumerate(zip(a, b, labels, strict=True)):
            where = f"{path}: row {row}"
            if not isinstance(x, str) or not isinstance(y, str):
                raise UserError(f"{where}: a missing text; expected strings in premise, "
                                "hypothesis")
            yield Example(n, x, y, parquet_label(SPEC, label, where))
            n += 1
    _nonempty(n, folder, expected)


def read_parquet_split(root: Path, lang: str, split: str, limit: int | None = None
                       ) -> list[Example]:
    """`iter_parquet_split`'s first `limit` examples (shards past them are not read)."""
    return list(islice(iter_parquet_split(root, lang, split), limit))


# ---- the splits a protocol reads ---------------------------------------------------------------

EvalData = dict[str, dict[str, list[Example]]]  # language -> "dev"/"test" -> examples


def load_eval_splits(path: str | None, xnli: str | None, layout: str,
                     languages: Sequence[str]) -> tuple[str, EvalData]:
    """(layout, language -> {"dev", "test"} -> examples) for the languages asked for."""
    kind = find_layout(path, xnli, layout)
    if kind == "parquet":
        assert path is not None  # find_layout finds parquet under `path` only
        return kind, {lang: {s: read_parquet_split(Path(path), lang, s) for s in EVAL_SPLITS}
                      for lang in languages}
    folder = _folder(path, xnli, "xnli")
    read = {s: read_xnli_tsv(folder / f"xnli.{s}.tsv", languages) for s in EVAL_SPLITS}
    return kind, {lang: {s: read[s][lang] for s in EVAL_SPLITS} for lang in languages}


def iter_train(config: XnliEvalConfig, layout: str, lang: str) -> Iterator[Example]:
    """The examples a language is fine-tuned on, cut to `train_examples`, one at a time."""
    if layout == "parquet":
        assert config.path is not None  # parquet is found under `path` only
        examples = iter_parquet_split(Path(config.path), lang, "train")
    else:
        path = _train_file(config, lang)
        examples = iter_multinli(path) if lang == "en" else iter_xnli_mt(path, lang)
    return islice(examples, config.train_examples)


def load_train(config: XnliEvalConfig, layout: str, lang: str) -> list[Example]:
    """The examples a language is fine-tuned on (`iter_train`), in memory for fine-tuning."""
    return list(iter_train(config, layout, lang))


# ---- metrics -----------------------------------------------------------------------------------

def split_name(kind: str, lang: str) -> str:
    """The name of a language's dev or test split among a fine-tuning's evaluation splits."""
    return f"{kind}.{lang}"


def parse_split(split: str) -> tuple[str, str] | None:
    """("dev" or "test", language) of a split name, None when it is not one."""
    kind, _, lang = split.partition(".")
    return (kind, lang) if kind in EVAL_SPLITS and lang in LANGUAGES else None


def accuracy(labels: Sequence[int | float] | np.ndarray,
             predictions: Sequence[float] | np.ndarray) -> float:
    """The fraction of predictions equal to the label (class ids 0..2: MNLI's classes)."""
    return split_metrics("mnli", labels, predictions)["acc"]


def xnli_metrics(splits: Mapping[str, tuple[Sequence[int | float], Sequence[float]]]
                 ) -> dict[str, float]:
    """From {"dev.<lang>" / "test.<lang>": (labels, predictions)}: `<lang>.acc` (test),
    `<lang>.dev_acc`, and the unweighted means over the languages, `avg` and `dev_avg`."""
    out: dict[str, float] = {}
    means: dict[str, list[float]] = {"avg": [], "dev_avg": []}
    for split, (labels, predictions) in splits.items():
        parsed = parse_split(split)
        if parsed is None:
            raise ValueError(f"split {split!r}: expected dev.<lang> or test.<lang>")
        kind, lang = parsed
        value = accuracy(labels, predictions)
        out[f"{lang}.{'acc' if kind == 'test' else 'dev_acc'}"] = value
        means["avg" if kind == "test" else "dev_avg"].append(value)
    return out | {name: float(np.mean(values)) for name, values in means.items() if values}


def rows_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`xnli_metrics` of per-example rows {"split", "label", "prediction"} (a samples file)."""
    splits: dict[str, tuple[list[int | float], list[float]]] = {}
    for row in rows:
        labels, predictions = splits.setdefault(row["split"], ([], []))
        labels.append(row["label"])
        predictions.append(row["prediction"])
    return xnli_metrics(splits)


# ---- the evaluator: fine-tune, score, select ---------------------------------------------------

@dataclass(frozen=True)
class Finetuning:
    """One fine-tuning of a protocol: the language trained on and the languages tested."""

    protocol: str
    train_language: str
    languages: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its metric prefix: `zero_shot`, `translate_train.<lang>`."""
        return self.protocol if self.protocol == "zero_shot" else (
            f"{self.protocol}.{self.train_language}")

    @property
    def selection_split(self) -> str:
        """The dev split its epoch is selected on: the training language's."""
        return split_name("dev", self.train_language)


def finetunings(protocol: str, languages: Sequence[str]) -> list[Finetuning]:
    """zero_shot: one, on English, tested in every language; translate_train: one per language,
    tested in that language."""
    if protocol == "zero_shot":
        return [Finetuning(protocol, "en", tuple(languages))]
    return [Finetuning(protocol, lang, (lang,)) for lang in languages]


def _finetune(config: XnliEvalConfig, layout: str, classifier: PairClassifier,
              run: Finetuning, data: EvalData, setting: EvalSetting, folder: Path
              ) -> TaskOutcome:
    """Fine-tune on the run's training language, scoring every epoch on its languages."""
    train = load_train(config, layout, run.train_language)
    dev = {split_name(kind, lang): data[lang][kind]
           for lang in run.languages for kind in EVAL_SPLITS}
    task = replace(SPEC, name=f"xnli-{run.name.replace('.', '-')}", dev_splits=tuple(dev))

    def metrics(splits: dict[str, tuple[list[int | float], list[float]]]) -> dict[str, float]:
        return xnli_metrics(splits) | {"score": accuracy(*splits[run.selection_split])}

    setting.log.info("xnli %s: fine-tuning on %d %s examples", run.name, len(train),
                     run.train_language)
    return finetune_and_select(classifier, task, train, dev, config.finetune,
                               setting.seed, folder, metrics)


class XnliEvaluator:
    """XNLI test accuracy per language and on average, by the zero-shot and translate-train
    protocols; fine-tuning compute is recorded apart from the training budget."""

    name = "xnli"
    config_model = XnliEvalConfig
    needs = PairClassifier

    def higher_is_better(self, metric: str) -> bool | None:
        return finetuned_direction(metric, ("acc", "dev_acc", "avg", "dev_avg"))

    def metrics(self, config: XnliEvalConfig) -> list[str]:
        """Per protocol each language's test and dev accuracy and their means, each
        fine-tuning's selected epoch and costs, each protocol's and all fine-tunings' costs."""
        names: dict[str, None] = {}
        for protocol in config.protocols:
            for run in finetunings(protocol, config.languages):
                names |= dict.fromkeys([f"{run.name}.epoch", *cost_names(run.name)])
            names |= dict.fromkeys(
                [f"{protocol}.{lang}.{acc}" for lang in config.languages
                 for acc in ("acc", "dev_acc")] + [f"{protocol}.avg", f"{protocol}.dev_avg",
                                                   *cost_names(protocol)])
        return [*names, *cost_names("")]

    def is_proxy(self, config: XnliEvalConfig) -> bool:
        return config.proxy

    def per_example(self, metric: str) -> PerExample | None:
        """`<protocol>.<lang>.acc` (test) and `.dev_acc`: a language's accuracy, the share of
        its split's examples predicted right by the selected epochs (the averages over
        languages are not: a mean of accuracies, not one over examples)."""
        parts = metric.split(".")
        if len(parts) != 3 or parts[0] not in PROTOCOLS or parts[1] not in LANGUAGES:
            return None
        kind = {"acc": "test", "dev_acc": "dev"}.get(parts[2])
        if kind is None:
            return None
        return PerExample(parts[0], ("split", "idx"), ("label", "prediction"),
                          lambda a: accuracy(a[:, 0], a[:, 1]),
                          correct=lambda a: a[:, 0] == a[:, 1],
                          only=("split", split_name(kind, parts[1])))

    def inputs(self, config: XnliEvalConfig, data_root: str | None) -> dict[str, str]:
        """The split files the protocols read (per-language folders in the parquet layout)."""
        try:
            layout = find_layout(config.path, config.xnli, config.layout)
        except UserError:  # missing data is check()'s to report; its files fingerprint missing
            layout = "parquet" if config.layout == "parquet" else "tsv"
        if layout == "parquet":
            assert config.path is not None  # the config requires it for parquet
            return {lang: str(Path(config.path) / lang)
                    for lang in dict.fromkeys(config.languages + config.train_languages)}
        folder = _folder(config.path, config.xnli, "xnli")
        return {f"xnli.{s}": str(folder / f"xnli.{s}.tsv") for s in EVAL_SPLITS} | {
            f"train.{lang}": str(_train_file(config, lang)) for lang in config.train_languages}

    def check(self, config: XnliEvalConfig, data_root: str | None) -> None:
        """Every split the protocols read is there and parses (training files up to
        `train_examples`)."""
        layout, _ = load_eval_splits(config.path, config.xnli, config.layout, config.languages)
        for lang in config.train_languages:  # read through, not kept: MultiNLI is 393k pairs
            deque(iter_train(config, layout, lang), maxlen=0)

    def evaluate(self, config: XnliEvalConfig, model: PairClassifier, setting: EvalSetting
                 ) -> EvalResult:
        layout, data = load_eval_splits(config.path, config.xnli, config.layout,
                                        config.languages)
        result = EvalResult(metrics={}, provenance={
            "epoch_selection": config.finetune.selection, "layout": layout})
        every: list[TaskOutcome] = []
        # Zero-shot's English fine-tuning (same data, seed and selection split as
        # translate-train's English; it goes first and scores every language) serves both.
        english: tuple[TaskOutcome, list[dict[str, Any]]] | None = None
        for protocol in sorted(config.protocols, key=lambda p: p != "zero_shot"):
            outcomes, rows = [], []
            for run in finetunings(protocol, config.languages):
                if run.train_language == "en" and english is not None:
                    outcome = english[0]
                    own = {split_name(kind, "en") for kind in EVAL_SPLITS}
                    selected = [r for r in english[1] if r["split"] in own]
                else:
                    outcome, selected = recorded_outcome(
                        enter_dir(setting.workdir, *run.name.split(".")),
                        partial(_finetune, config, layout, model, run, data, setting))
                    every.append(outcome)
                    if protocol == "zero_shot":
                        english = (outcome, selected)
                outcomes.append(outcome)
                rows += selected
                result.metrics |= {f"{run.name}.epoch": float(outcome.epoch)} | finetune_costs(
                    run.name, [outcome])
                setting.log.info("xnli %s: epoch %d of %d (selection %s on %s)", run.name,
                                 outcome.epoch, len(outcome.epoch_scores), outcome.selection,
                                 run.selection_split)
            result.samples[protocol] = rows
            result.metrics |= {f"{protocol}.{k}": v for k, v in rows_metrics(rows).items()}
            result.metrics |= finetune_costs(protocol, outcomes)
        result.metrics |= finetune_costs("", every)
        return result


EVALUATOR: Evaluator[XnliEvalConfig, PairClassifier] = XnliEvaluator()
