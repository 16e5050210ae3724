"""Fine-tuning a `PairClassifier` on one task and reporting one epoch, as GLUE and XNLI both do:
every epoch's per-example dev predictions kept (`dev_epoch<n>.jsonl`) and scored, the reported
epoch the best (by the headline score, the first on ties; a NaN score never wins) or the last,
the outcome recorded (`result.json`) so that a finished task is not fine-tuned again, and the
fine-tuning's cost named apart from the training budget. No model code and no torch here."""

import json
import math
import os
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.evals.adapters import Example, FinetuneConfig, Finetuned, PairClassifier, TaskSpec
from bench.util.atomic import open_read, write_text

# What a fine-tuning costs, recorded apart from the training budget.
COSTS = ("flops", "seconds", "tokens", "steps")


@dataclass
class TaskOutcome:
    """A fine-tuned task's reported scores and what the fine-tuning cost (its result.json)."""

    task: str
    metrics: dict[str, float]  # the selected epoch's dev metrics, "score" included
    epoch: int  # the selected epoch, 1-based
    epoch_scores: list[float]
    selection: str
    steps: int
    flops: float
    tokens: int
    seconds: float

    @property
    def best_score(self) -> float:
        return self.epoch_scores[_select(self.epoch_scores, "best")]

    @property
    def cost(self) -> dict[str, float]:
        return dict(zip(COSTS, (self.flops, self.seconds, float(self.tokens), float(self.steps)),
                        strict=True))


def _select(scores: list[float], selection: str) -> int:
    """0-based index of the reported epoch; NaN scores (a constant prediction) never win."""
    if selection == "last":
        return len(scores) - 1
    ranked = [(-math.inf if math.isnan(s) else s) for s in scores]
    return ranked.index(max(ranked))


def _gold(task: TaskSpec, examples: Sequence[Example]) -> list[int | float]:
    """Dev labels as the classifier sees them: class ids, or STS-B scores rounded to float32."""
    if task.is_regression:
        return [float(np.float32(x.label)) for x in examples]
    return [x.label for x in examples]


ScoreSplits = Callable[[dict[str, tuple[list[int | float], list[float]]]], dict[str, float]]


def finetune_and_select(classifier: PairClassifier, task: TaskSpec, train: Sequence[Example],
                        dev: Mapping[str, Sequence[Example]], settings: FinetuneConfig,
                        seed: int, folder: Path, metrics: ScoreSplits) -> TaskOutcome:
    """Fine-tune once, saving every epoch's per-example predictions of every dev split
    (`dev_epoch<n>.jsonl` in `folder`) and scoring them with `metrics` ({split: (gold,
    predictions)} -> metrics, `score` among them); the reported epoch is chosen on `score`."""
    gold = {split: _gold(task, examples) for split, examples in dev.items()}

    def score_epoch(epoch: int, predictions: dict[str, list[float]]) -> dict[str, float]:
        scored = metrics({s: (gold[s], predictions[s]) for s in dev})
        rows = [{"split": s, "idx": x.idx, "label": y, "prediction": p}
                for s, examples in dev.items()
                for x, y, p in zip(examples, gold[s], predictions[s], strict=True)]
        write_text(folder / f"dev_epoch{epoch}.jsonl",
                   "".join(json.dumps(r) + "\n" for r in rows))
        return {"epoch": float(epoch), **scored}

    tuned: Finetuned = classifier.finetune(
        task, train, dev, settings, seed=seed, scratch=folder / "checkpoints",
        score_epoch=score_epoch)
    scores = [epoch["score"] for epoch in tuned.epochs]
    chosen = _select(scores, settings.selection)
    selected = {k: v for k, v in tuned.epochs[chosen].items() if k != "epoch"}
    return TaskOutcome(task=task.name, metrics=selected, epoch=chosen + 1, epoch_scores=scores,
                       selection=settings.selection, steps=tuned.steps,
                       flops=tuned.flops, tokens=tuned.tokens, seconds=tuned.seconds)


def recorded_outcome(folder: Path, finetune: Callable[[Path], TaskOutcome]
                     ) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """A fine-tuning's outcome and the reported epoch's per-example dev predictions. A finished
    one (`folder`/result.json) is read back; a new one is run by `finetune(folder)`, and its
    checkpoints dropped once its result is written (the scores are what is kept). Both are
    read back without following a link (`bench.util.atomic.open_read`)."""
    done = folder / "result.json"
    if os.path.lexists(done):
        with open_read(done) as f:
            outcome = TaskOutcome(**json.load(f)["outcome"])
    else:
        outcome = finetune(folder)
        write_text(done, json.dumps({"outcome": asdict(outcome)}, indent=1) + "\n")
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    with open_read(folder / f"dev_epoch{outcome.epoch}.jsonl") as f:
        rows = f.read().decode("utf-8").splitlines()
    return outcome, [json.loads(line) for line in rows if line]


def finetune_costs(prefix: str, outcomes: Sequence[TaskOutcome]) -> dict[str, float]:
    """`<prefix>.finetune_<cost>` summed over fine-tunings' outcomes (no prefix: bare names)."""
    return {name: sum(o.cost[k] for o in outcomes)
            for name, k in zip(cost_names(prefix), COSTS, strict=True)}


def cost_names(prefix: str) -> list[str]:
    """The names `finetune_costs(prefix, ...)` records."""
    dot = f"{prefix}." if prefix else ""
    return [f"{dot}finetune_{k}" for k in COSTS]


def finetuned_direction(metric: str, scores: Collection[str]) -> bool | None:
    """`higher_is_better` of a fine-tuning evaluator: its costs are lower-better, the metrics
    named in `scores` higher-better, anything else (the epoch reported) neither."""
    last = metric.rsplit(".", 1)[-1]
    if last.startswith("finetune_"):
        return False
    return True if last in scores else None
