"""GLUE (Wang et al., 2018) dev-set scoring as the CWT paper reports it: the task's gold labels
(the official task folders, or Hugging Face's parquet copy) and a model's per-example predictions
in, the task's metrics out. The evaluator (`EVALUATOR`) runs the paper's fine-tuning protocol on
any `PairClassifier`: the model is fine-tuned behind that adapter, which hands back each epoch's
dev predictions; this module scores them, picks the reported epoch and keeps each task's result.
No model code and no torch here.

Choices, where the written protocol is silent or the sources differ:
- TSV files are read as the GLUE baselines and Hugging Face's loader read them: the csv module,
  tab-delimited, quoting disabled (a `"` is part of the sentence, never CSV quoting, so a sentence
  may start with one), UTF-8 with a leading byte-order mark dropped (MRPC's header carries one),
  universal newlines (a trailing "\\r" goes), blank lines skipped. Columns are found by header
  name; CoLA has no header (column 1 the label, column 3 the sentence). Not `read_lines`:
  `str.splitlines` also breaks at U+2028 or U+0085, which can occur inside a sentence.
- Labels are the class ids of Hugging Face's `nyu-mll/glue`, so both layouts give the same
  examples: CoLA, SST-2, MRPC, QQP and WNLI 0/1 as written (WNLI 1 = entailment); QNLI and RTE
  entailment 0, not_entailment 1; MNLI entailment 0, neutral 1, contradiction 2; STS-B the score
  (0 to 5) as a float. Parquet stores STS-B scores as float32; they are read back as the shortest
  decimal that rounds to that float32 (3.8, not 3.7999999523), the value the TSV spells.
- `idx` is the 0-based data row within its split file, which is Hugging Face's `idx` column.
- Metrics are fractions (0.8456, not 84.56) with scikit-learn's and scipy's semantics: F1 of
  class 1 and 0.0 when undefined; Matthews correlation 0.0 when its denominator is 0; Pearson, and
  Spearman on average ranks, NaN when an input is constant.
- Each task's `score` is the CWT paper's headline metric: CoLA Matthews correlation, STS-B
  Spearman, accuracy for the rest (MRPC and QQP included), MNLI accuracy over the matched and
  mismatched dev sets concatenated (`acc_m` and `acc_mm` are reported as well). The GLUE
  leaderboard differs: it averages accuracy and F1 (MRPC, QQP) and Pearson and Spearman (STS-B),
  and lists MNLI-m and MNLI-mm as separate entries. `glue_score` is the paper's unweighted mean of
  the headline scores of the tasks it is given (the paper: `PAPER_TASKS`).
- Fine-tuning: every epoch is scored on the dev split(s) and its per-example predictions kept
  (`dev_epoch<n>.jsonl`); the reported epoch is the best one (by the headline score, the first on
  ties; a NaN score never wins) or the last, as configured, and both selections' GLUE scores are
  recorded. STS-B gold scores are compared in float32, the precision the classifier trains and
  predicts in. A finished task (its `result.json`) is not fine-tuned again.
"""

import csv
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

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
from bench.evals.io import json_records, shown
from bench.schema import InputPath, Int, Strict
from bench.util.atomic import enter_dir

if TYPE_CHECKING:
    import pyarrow as pa

LAYOUTS = ("auto", "tsv", "parquet")
_STSB_RANGE = (0.0, 5.0)


@dataclass(frozen=True)
class TaskData:
    """A task's training examples and dev split(s), whichever layout they were read from."""

    task: TaskSpec
    train: list[Example]
    dev: dict[str, list[Example]]
    layout: str
    source: str


@dataclass(frozen=True)
class _Format:
    """Where a task's fields are in each layout, and its TSV label strings in class-id order."""
    tsv_columns: tuple[str, str | None, str] | None  # text_a, text_b, label; None: CoLA's
    parquet_columns: tuple[str, str | None]
    labels: tuple[str, ...]  # empty for regression


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_FORMATS = {
    "cola": _Format(None, ("sentence", None), _BINARY),
    "sst2": _Format(("sentence", None, "label"), ("sentence", None), _BINARY),
    "mrpc": _Format(("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2"), _BINARY),
    "stsb": _Format(("sentence1", "sentence2", "score"), ("sentence1", "sentence2"), ()),
    "qqp": _Format(("question1", "question2", "is_duplicate"), ("question1", "question2"),
                   _BINARY),
    "mnli": _Format(("sentence1", "sentence2", "gold_label"), ("premise", "hypothesis"),
                    ("entailment", "neutral", "contradiction")),
    "qnli": _Format(("question", "sentence", "label"), ("question", "sentence"), _NLI),
    "rte": _Format(("sentence1", "sentence2", "label"), ("sentence1", "sentence2"), _NLI),
    "wnli": _Format(("sentence1", "sentence2", "label"), ("sentence1", "sentence2"), _BINARY),
}
# CoLA's TSV: fields per line, sentence column, label column (source, label, original mark, text).
_COLA_FIELDS, _COLA_SENTENCE, _COLA_LABEL = 4, 3, 1
# Our split names -> Hugging Face's.
_HF_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}
# Per-split metric names of a task with several dev splits: acc_m, acc_mm.
_SPLIT_SUFFIX = {"dev_matched": "m", "dev_mismatched": "mm"}
# The metrics of one dev split.
_SPLIT_METRICS = {"cola": ("mcc",), "sst2": ("acc",), "mrpc": ("acc", "f1"),
                  "stsb": ("pearson", "spearman"), "qqp": ("acc", "f1"), "mnli": ("acc",),
                  "qnli": ("acc",), "rte": ("acc",), "wnli": ("acc",)}


def _task(name: str, folder: str, num_labels: int, score: str,
          dev_splits: tuple[str, ...] = ("dev",)) -> TaskSpec:
    own = _SPLIT_METRICS[name]
    per_split = tuple(f"{m}_{_SPLIT_SUFFIX[s]}" for s in dev_splits if len(dev_splits) > 1
                      for m in own)
    return TaskSpec(name, folder, num_labels, dev_splits, own + per_split, score)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    _task("cola", "CoLA", 2, "mcc"),
    _task("sst2", "SST-2", 2, "acc"),
    _task("mrpc", "MRPC", 2, "acc"),
    _task("stsb", "STS-B", 1, "spearman"),
    _task("qqp", "QQP", 2, "acc"),
    _task("mnli", "MNLI", 3, "acc", ("dev_matched", "dev_mismatched")),
    _task("qnli", "QNLI", 2, "acc"),
    _task("rte", "RTE", 2, "acc"),
    _task("wnli", "WNLI", 2, "acc"),
)}
PAPER_TASKS: tuple[str, ...] = ("mrpc", "cola", "stsb", "sst2", "qnli", "qqp", "mnli")


class GlueEvalConfig(Strict):
    """GLUE dev scores after fine-tuning each task from the pretrained encoder."""

    path: InputPath = Field(description="folder with the official task folders or the HF "
                                        "parquet layout")
    layout: Literal["auto", "tsv", "parquet"] = "auto"
    tasks: list[str] = Field(
        ["mrpc", "cola", "stsb", "sst2", "qnli", "qqp", "mnli"],
        min_length=1, description="tasks fine-tuned and averaged (default: the paper's seven)")
    finetune: FinetuneConfig = FinetuneConfig()
    proxy: bool = Field(False, description="the data is a stand-in, labelled so in reports")
    limit_train: Int | None = Field(None, gt=0, description="first N training examples only")

    @model_validator(mode="after")
    def _known_tasks(self) -> "GlueEvalConfig":
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown GLUE task(s) {unknown}; known: {', '.join(TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks must be distinct")
        return self


def _spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise UserError(f"unknown GLUE task {shown(task)}; expected one of {', '.join(TASKS)}")
    return TASKS[task]


# ---- loading ----------------------------------------------------------------------------------

def find_layout(root: str | Path, task: str, layout: str = "auto") -> tuple[str, Path]:
    """(layout, folder) of `task` under `root`: the official `<root>/<folder>` TSVs, or the
    Hugging Face `<root>/<name>` parquet shards; "auto" prefers the official folder."""
    spec = _spec(task)
    if layout not in LAYOUTS:
        raise UserError(f"layout {shown(layout)}: expected one of {', '.join(LAYOUTS)}")
    folders = {"tsv": Path(root) / spec.folder, "parquet": Path(root) / spec.name}
    kinds = ("tsv", "parquet") if layout == "auto" else (layout,)
    for kind in kinds:
        if folders[kind].is_dir():
            return kind, folders[kind]
    expected = {"tsv": "the official GLUE folder", "parquet": "Hugging Face's nyu-mll/glue folder"}
    raise UserError(f"{task}: no folder {' nor '.join(str(folders[k]) for k in kinds)}; expected "
                    + " or ".join(f"{expected[k]} ({folders[k].name})" for k in kinds))


def read_split(root: str | Path, task: str, split: str, layout: str = "auto") -> list[Example]:
    """One split ("train", "dev", "dev_matched", "dev_mismatched") of a task, in file order."""
    spec = _spec(task)
    splits = ("train", *spec.dev_splits)
    if split not in splits:
        raise UserError(f"{task}: no split {shown(split)}; expected one of {', '.join(splits)}")
    kind, folder = find_layout(root, task, layout)
    if kind == "tsv":
        return _read_tsv(folder / f"{split}.tsv", spec)
    return _read_parquet(folder, spec, split)


def load_task(root: str | Path, task: str, layout: str = "auto") -> TaskData:
    """A task's train split and every dev split, from one layout."""
    spec = _spec(task)
    kind, folder = find_layout(root, task, layout)
    return TaskData(task=spec, train=read_split(root, task, "train", kind),
                    dev={s: read_split(root, task, s, kind) for s in spec.dev_splits},
                    layout=kind, source=str(folder))


def iter_tsv(path: Path, expected: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line, read with quoting disabled, one at a time
    (a reader may stop early); an unreadable file is a UserError naming it and `expected`."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None)
            for row in reader:
                if row:
                    yield reader.line_num, row
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; expected {expected}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read it as UTF-8 tab-separated text ({e})") from None


def _tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a GLUE split file."""
    rows = list(iter_tsv(path, "a GLUE split file"))
    if not rows:
        raise UserError(f"{path}: empty file; expected a GLUE split file")
    return rows


def _read_tsv(path: Path, spec: TaskSpec) -> list[Example]:
    rows = _tsv_rows(path)
    columns = _FORMATS[spec.name].tsv_columns
    if columns is None:
        width, (a, b, label) = _COLA_FIELDS, (_COLA_SENTENCE, None, _COLA_LABEL)
        what = f"{width} (CoLA: source, label, original mark, sentence; no header)"
    else:
        line, header = rows.pop(0)
        missing = [c for c in columns if c is not None and c not in header]
        if missing:
            raise UserError(f"{path}:{line}: the header has no column {', '.join(missing)}; "
                            f"expected {spec.folder}'s header with "
                            f"{', '.join(c for c in columns if c)}")
        width, what = len(header), f"{len(header)} (as the header)"
        a, label = header.index(columns[0]), header.index(columns[2])
        b = None if columns[1] is None else header.index(columns[1])
        if not rows:
            raise UserError(f"{path}: no example after the header; expected at least one")
    examples = []
    for idx, (line, fields) in enumerate(rows):
        if len(fields) != width:
            raise UserError(f"{path}:{line}: {len(fields)} tab-separated fields; expected {what}")
        examples.append(Example(idx, fields[a], None if b is None else fields[b],
                                _tsv_label(spec, fields[label], f"{path}:{line}")))
    return examples


def _tsv_label(spec: TaskSpec, raw: str, where: str) -> int | float:
    if spec.is_regression:
        try:
            return _score(spec, float(raw), where)
        except ValueError:
            raise UserError(f"{where}: label {shown(raw)} is not a number; expected a similarity "
                            f"score from {_STSB_RANGE[0]:g} to {_STSB_RANGE[1]:g}") from None
    labels = _FORMATS[spec.name].labels
    if raw not in labels:
        raise UserError(f"{where}: label {shown(raw)}; expected one of {', '.join(labels)}")
    return labels.index(raw)


def _score(spec: TaskSpec, value: float, where: str) -> float:
    lo, hi = _STSB_RANGE
    if not lo <= value <= hi:
        raise UserError(f"{where}: {spec.name} label {shown(value)}; expected a similarity score "
                        f"from {lo:g} to {hi:g}")
    return value


def _read_parquet(folder: Path, spec: TaskSpec, split: str) -> list[Example]:
    import pyarrow as pa

    files = sorted(folder.glob(f"{_HF_SPLITS[split]}-*.parquet"))
    if not files:
        raise UserError(f"{folder}: no {_HF_SPLITS[split]}-*.parquet file; expected Hugging "
                        f"Face's nyu-mll/glue layout for {spec.name} {split}")
    a, b = _FORMATS[spec.name].parquet_columns
    names = [c for c in (a, b, "label", "idx") if c is not None]
    examples: list[Example] = []
    seen: set[int] = set()
    for path in files:
        table = read_parquet_table(path, names)
        cols = {c: table.column(c).to_pylist() for c in names}
        if table.column("label").type == pa.float32():
            cols["label"] = [v if v is None else float(str(np.float32(v))) for v in cols["label"]]
        for row in range(table.num_rows):
            where = f"{path}: row {row}"
            idx = cols["idx"][row]
            if not isinstance(idx, int) or idx < 0 or idx in seen:
                raise UserError(f"{where}: idx {shown(idx)}; expected an integer >= 0 that no "
                                "other row of the split has")
            seen.add(idx)
            texts = [cols[a][row], None if b is None else cols[b][row]]
            if not isinstance(texts[0], str) or (b is not None and not isinstance(texts[1], str)):
                raise UserError(f"{where}: a missing text; expected strings in "
                                f"{', '.join(c for c in (a, b) if c)}")
            examples.append(Example(idx, texts[0], texts[1],
                                    parquet_label(spec, cols["label"][row], where)))
    return examples


def read_parquet_table(path: Path, names: Sequence[str]) -> "pa.Table":
    """The named columns of one parquet file; a missing column or an unreadable file is a
    UserError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        present = pq.read_schema(path).names
        missing = [c for c in names if c not in present]
        if missing:
            raise UserError(f"{path}: no column {', '.join(missing)}; expected the columns "
                            f"{', '.join(names)}")
        return pq.read_table(path, columns=list(names))
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot read it as parquet ({e})") from None


def parquet_label(spec: TaskSpec, value: Any, where: str) -> int | float:
    """A parquet row's label checked as Hugging Face stores it: a class id (-1 for unlabelled
    test rows, refused) or STS-B's score."""
    if spec.is_regression:
        if not isinstance(value, float | int) or isinstance(value, bool):
            raise UserError(f"{where}: label {shown(value)}; expected a similarity score")
        return _score(spec, float(value), where)
    if value == -1:
        raise UserError(f"{where}: label -1 (unlabelled, as in a test split); expected a class "
                        f"id 0..{spec.num_labels - 1} in a train or dev split")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < spec.num_labels:
        raise UserError(f"{where}: label {shown(value)}; expected a class id "
                        f"0..{spec.num_labels - 1}")
    return value


# ---- predictions ------------------------------------------------------------------------------

def read_predictions(path: Path) -> dict[str, dict[int, int | float]]:
    """split -> idx -> prediction, from JSON lines {"split", "idx", "prediction"[, "label"]}:
    the per-example output the training harness writes (samples_glue_<task>.jsonl)."""
    expected = 'JSON lines {"split": ..., "idx": ..., "prediction": ...}'
    out: dict[str, dict[int, int | float]] = {}
    first_line: dict[tuple[str, int], int] = {}
    for n, rec in json_records(path, expected):
        where = f"{path}:{n}"
        split, idx, pred = rec.get("split"), rec.get("idx"), rec.get("prediction")
        if not isinstance(split, str):
            raise UserError(f"{where}: split {shown(split)}; expected a split name such as "
                            "'dev'")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise UserError(f"{where}: idx {shown(idx)}; expected an integer >= 0")
        if not _is_finite_number(pred):
            raise UserError(f"{where}: prediction {shown(pred)}; expected a finite number")
        if (split, idx) in first_line:
            raise UserError(f"{where}: a second prediction for split {shown(split)} idx {idx} "
                            f"(the first is on line {first_line[split, idx]})")
        first_line[split, idx] = n
        out.setdefault(split, {})[idx] = pred
    if not out:
        raise UserError(f"{path}: no prediction; expected {expected}")
    return out


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number that is a finite float: not a bool, NaN, infinity or an int past 1e308."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# ---- metrics ----------------------------------------------------------------------------------

def _class_ids(values: np.ndarray, spec: TaskSpec, what: str) -> np.ndarray:
    numeric = values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.isfinite(values).all())
    ids = values.astype(np.int64) if numeric else None
    if ids is None or np.any(ids != values) or np.any((ids < 0) | (ids >= spec.num_labels)):
        raise ValueError(f"{spec.name} {what}: expected class ids 0..{spec.num_labels - 1}")
    return ids


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(y == p))


def _f1(y: np.ndarray, p: np.ndarray) -> float:
    """F1 of class 1: 2 TP / (true positives + predicted positives), 0.0 when both are none."""
    denom = np.count_nonzero(y == 1) + np.count_nonzero(p == 1)
    return 2 * np.count_nonzero((y == 1) & (p == 1)) / denom if denom else 0.0


def _mcc(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Matthews correlation from the k x k confusion matrix (Gorodkin's multi-class form)."""
    c = np.bincount(y * k + p, minlength=k * k).reshape(k, k).astype(np.float64)
    t, q, n = c.sum(axis=1), c.sum(axis=0), c.sum()
    cov_tp = np.trace(c) * n - t @ q
    denom = (n * n - t @ t) * (n * n - q @ q)
    return float(cov_tp / math.sqrt(denom)) if denom else 0.0


def _correlations(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from scipy import stats  # here: `bench` builds every evaluator's parser at start-up

    with warnings.catch_warnings():  # a constant input gives NaN: the value says so already
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return {"pearson": float(stats.pearsonr(y, p).statistic),
                "spearman": float(stats.spearmanr(y, p).statistic)}


def split_metrics(task: str, labels: Sequence | np.ndarray, predictions: Sequence | np.ndarray
                  ) -> dict[str, float]:
    """The task's metrics on one split: class ids, or floats for STS-B."""
    spec = _spec(task)
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"{task}: {len(labels)} labels but {len(predictions)} predictions")
    if spec.is_regression:
        y, p = y.astype(np.float64), p.astype(np.float64)
        if len(y) < 2 or not (np.isfinite(y).all() and np.isfinite(p).all()):
            raise ValueError(f"{task}: expected at least 2 finite labels and predictions")
        return _correlations(y, p)
    if not len(y):
        raise ValueError(f"{task}: no examples")
    y, p = _class_ids(y, spec, "labels"), _class_ids(p, spec, "predictions")
    fns = {"acc": lambda: _accuracy(y, p), "f1": lambda: _f1(y, p),
           "mcc": lambda: _mcc(y, p, spec.num_labels)}
    return {m: fns[m]() for m in _SPLIT_METRICS[task]}


def evaluate_task(task: str, dev: Mapping[str, tuple[Sequence, Sequence]]) -> dict[str, float]:
    """The task's metrics over its dev split(s) plus `score`, the paper's headline metric.
    Several dev splits (MNLI) are scored concatenated, and each on its own (acc_m, acc_mm)."""
    spec = _spec(task)
    if sorted(dev) != sorted(spec.dev_splits):
        raise ValueError(f"{task}: dev splits {', '.join(dev) or 'none'}; expected "
                         f"{', '.join(spec.dev_splits)}")
    for s in spec.dev_splits:
        if len(dev[s][0]) != len(dev[s][1]):
            raise ValueError(f"{task} {s}: {len(dev[s][0])} labels but {len(dev[s][1])} "
                             "predictions")
    labels = [y for s in spec.dev_splits for y in dev[s][0]]
    predictions = [p for s in spec.dev_splits for p in dev[s][1]]
    out = split_metrics(task, labels, predictions)
    if len(spec.dev_splits) > 1:
        for s in spec.dev_splits:
            out |= {f"{k}_{_SPLIT_SUFFIX[s]}": v for k, v in split_metrics(task, *dev[s]).items()}
    out["score"] = out[spec.score]
    return out


def glue_score(task_scores: Mapping[str, float], tasks: Sequence[str]) -> float:
    """The unweighted mean of the listed tasks' scores (the paper's GLUE score: PAPER_TASKS)."""
    missing = [t for t in tasks if t not in task_scores]
    if missing or not tasks:
        raise ValueError(f"GLUE score: no score for {', '.join(missing) or 'any task'}")
    return float(np.mean([task_scores[t] for t in tasks]))


# ---- the evaluator: fine-tune, score, select ---------------------------------------------------

# Metrics where larger is better, without the task prefix; `finetune_*` costs are better smaller.
_SCORES = frozenset(m for t in TASKS.values() for m in t.metrics) | {
    "score", "score_best", "score_last"}



def _finetune(config: GlueEvalConfig, classifier: PairClassifier, data: TaskData,
              setting: EvalSetting, folder: Path) -> TaskOutcome:
    """Fine-tune on one task, saving every epoch's dev predictions; select the reported epoch."""
    task = data.task
    train = data.train[:config.limit_train] if config.limit_train else data.train
    if not train:
        raise ValueError(f"{data.source}: task {task.name} has no training examples")
    return finetune_and_select(classifier, task, train, data.dev, config.finetune,
                               setting.seed, folder, lambda dev: evaluate_task(task.name, dev))


def _task_outcome(config: GlueEvalConfig, classifier: PairClassifier, data: TaskData,
                  setting: EvalSetting) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """A task's outcome and the reported epoch's per-example dev predictions (see
    `recorded_outcome`)."""
    return recorded_outcome(enter_dir(setting.workdir, data.task.name),
                            lambda folder: _finetune(config, classifier, data, setting, folder))


def _task_metrics(outcome: TaskOutcome) -> dict[str, float]:
    """`<task>.<metric>` of the selected epoch, the epoch, both selections' scores and costs."""
    both = {"best": outcome.best_score, "last": outcome.epoch_scores[-1]}
    return {f"{outcome.task}.{k}": v for k, v in outcome.metrics.items()} | {
        f"{outcome.task}.epoch": float(outcome.epoch)} | {
        f"{outcome.task}.score_{k}": v for k, v in both.items()} | finetune_costs(
        outcome.task, [outcome])


def _overall(outcomes: list[TaskOutcome], tasks: list[str]) -> dict[str, float]:
    """The GLUE score of the configured selection (`score`) and of each selection by name, and
    the fine-tuning cost of all tasks together."""
    by_selection = {"best": {o.task: o.best_score for o in outcomes},
                    "last": {o.task: o.epoch_scores[-1] for o in outcomes}}
    return {"score": glue_score({o.task: o.metrics["score"] for o in outcomes}, tasks)} | {
        f"score_{k}": glue_score(v, tasks) for k, v in by_selection.items()} | finetune_costs(
        "", outcomes)


class GlueEvaluator:
    """GLUE dev scores of a pretrained encoder fine-tuned on each task from the same weights;
    fine-tuning compute is recorded per task and in total, apart from the training budget."""

    name = "glue"
    config_model = GlueEvalConfig
    needs = PairClassifier

    def higher_is_better(self, metric: str) -> bool | None:
        return finetuned_direction(metric, _SCORES)

    def metrics(self, config: GlueEvalConfig) -> list[str]:
        """Per task its metrics, the selected epoch, both selections' scores and its costs;
        the GLUE score of each selection and the costs of all tasks."""
        per_task = [f"{task}.{name}" for task in config.tasks for name in (
            *TASKS[task].metrics, "score", "epoch", "score_best", "score_last")]
        return per_task + [name for task in config.tasks for name in cost_names(task)] + [
            "score", "score_best", "score_last", *cost_names("")]

    def is_proxy(self, config: GlueEvalConfig) -> bool:
        return config.proxy

    def per_example(self, metric: str) -> PerExample | None:
        """`<task>.<metric>` from the selected epoch's dev predictions (a task's dev splits
        pooled, `_m`/`_mm` one split, `score` its headline metric), as `split_metrics` scores
        them; accuracies are shares of correct examples."""
        task, _, name = metric.partition(".")
        if task not in TASKS:
            return None
        spec = TASKS[task]
        name = spec.score if name == "score" else name
        split = None
        for s, suffix in _SPLIT_SUFFIX.items():
            if s in spec.dev_splits and name.endswith(f"_{suffix}"):
                name, split = name.removesuffix(f"_{suffix}"), s
        if name not in _SPLIT_METRICS[task]:
            return None
        return PerExample(task, ("split", "idx"), ("label", "prediction"),
                          lambda a: split_metrics(task, a[:, 0], a[:, 1])[name],
                          correct=(lambda a: a[:, 0] == a[:, 1]) if name == "acc" else None,
                          only=None if split is None else ("split", split))

    def inputs(self, config: GlueEvalConfig, data_root: str | None) -> dict[str, str]:
        return {"path": config.path}

    def check(self, config: GlueEvalConfig, data_root: str | None) -> None:
        """Every task's folder is there in the layout asked for."""
        for task in config.tasks:
            find_layout(config.path, task, config.layout)

    def evaluate(self, config: GlueEvalConfig, model: PairClassifier, setting: EvalSetting
                 ) -> EvalResult:
        result = EvalResult(metrics={},
                            provenance={"epoch_selection": config.finetune.selection})
        outcomes = []
        for task in config.tasks:
            data = load_task(config.path, task, config.layout)
            outcome, result.samples[task] = _task_outcome(config, model, data, setting)
            result.metrics |= _task_metrics(outcome)
            outcomes.append(outcome)
            setting.log.info("%s %s: %s (epoch %d of %d, selection %s, from %s)", self.name,
                             task, outcome.metrics, outcome.epoch, len(outcome.epoch_scores),
                             outcome.selection, data.source)
        result.metrics |= _overall(outcomes, config.tasks)
        return result


EVALUATOR: Evaluator[GlueEvalConfig, PairClassifier] = GlueEvaluator()
