"""GLUE fine-tuning from a pretrained encoder, one task at a time, by the CWT paper's protocol.

A fresh copy of the encoder gets a dropout + linear head on the final [CLS] state (the paper's
`pooling: cls`; BERT's pooler is not used, since pretraining without next-sentence prediction never
trains it). Classification trains with cross-entropy, class-balanced by default (weights
n / (C n_c)); STS-B regresses its score with MSE. Every epoch is scored on the dev split(s) and its
per-example predictions saved; the reported epoch is the best one (by the task's headline score, the
first on ties) or the last, as configured. The steps run through the harness's training loop, so
they are counted in FLOPs and resume after a kill; their compute is the task's own, outside the
pretraining budget. The public code's quirk of applying cross-entropy to softmax outputs (a double
softmax) is not reproduced: the loss takes the logits.

Sequences are [CLS] a [SEP] (b [SEP]), cut longest-first to `max_seq_len`, padded to the longest
framed example of the task (at most `max_seq_len`), so each task has one input shape.
"""

import copy
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertModel, PreTrainedTokenizerFast

from bench.atomic import write_text
from bench.budget import StageBudget
from bench.encoder.config import FinetuneConfig
from bench.evals.glue import Example, TaskData, evaluate_task
from bench.sampling import epoch_permutation
from bench.train import Stage, train_stage


@dataclass(frozen=True)
class EncodedSplit:
    """A split as padded tensors, with each example's index in its file."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    labels: Tensor
    idx: list[int]

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.input_ids[index], self.attention_mask[index], self.token_type_ids[index],
                self.labels[index])


def _truncate_pair(a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
    """Longest-first truncation (BERT's `_truncate_seq_pair`): drop from the longer one's end."""
    a, b = list(a), list(b)
    while len(a) + len(b) > room:
        (a if len(a) > len(b) else b).pop()
    return a, b


def frame_examples(examples: list[Example], tokenizer: PreTrainedTokenizerFast,
                   max_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids and segment ids of each example, framed and truncated, not yet padded."""
    encode = tokenizer.backend_tokenizer.encode_batch_fast
    first = [e.ids for e in encode([x.text_a for x in examples], add_special_tokens=False)]
    pairs = [x.text_b for x in examples]
    second = ([e.ids for e in encode([t or "" for t in pairs], add_special_tokens=False)]
              if any(t is not None for t in pairs) else [[] for _ in examples])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    framed = []
    for a, b, text_b in zip(first, second, pairs, strict=True):
        if text_b is None:
            a, _ = _truncate_pair(a, [], max_len - 2)
            ids, types = [cls, *a, sep], [0] * (len(a) + 2)
        else:
            a, b = _truncate_pair(a, b, max_len - 3)
            ids = [cls, *a, sep, *b, sep]
            types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        framed.append((ids, types))
    return framed


def encode_split(examples: list[Example], framed: list[tuple[list[int], list[int]]],
                 width: int, pad_id: int, regression: bool) -> EncodedSplit:
    n = len(examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (row, segment) in enumerate(framed):
        ids[i, : len(row)] = torch.tensor(row)
        types[i, : len(row)] = torch.tensor(segment)
        mask[i, : len(row)] = 1
    labels = torch.tensor([x.label for x in examples],
                          dtype=torch.float32 if regression else torch.long)
    return EncodedSplit(ids, mask, types, labels, [x.idx for x in examples])


def encode_task(data: TaskData, tokenizer: PreTrainedTokenizerFast, max_len: int,
                limit_train: int | None) -> tuple[EncodedSplit, dict[str, EncodedSplit]]:
    """Training and dev splits as tensors of one width: the task's longest framed example."""
    splits = {"train": data.train[:limit_train] if limit_train else data.train, **data.dev}
    framed = {name: frame_examples(ex, tokenizer, max_len) for name, ex in splits.items()}
    width = max(len(ids) for rows in framed.values() for ids, _ in rows)
    encoded = {name: encode_split(splits[name], framed[name], width, tokenizer.pad_token_id,
                                  data.task.is_regression) for name in splits}
    train = encoded.pop("train")
    return train, encoded


class ClsClassifier(nn.Module):
    """Encoder + dropout + linear head on the final [CLS] state; one output for regression."""

    def __init__(self, encoder: BertModel, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        nn.init.normal_(self.head.weight, std=encoder.config.initializer_range)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor
                ) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        logits = self.head(self.dropout(hidden[:, 0]))
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def balanced_class_weights(labels: Tensor, num_labels: int) -> Tensor:
    """n / (C n_c) per class (scikit-learn's 'balanced'); a class absent from training gets 0."""
    counts = torch.bincount(labels, minlength=num_labels).double()
    weights = torch.where(counts > 0, len(labels) / (num_labels * counts.clamp(min=1)), 0.0)
    return weights.float()


@dataclass
class TaskOutcome:
    """A fine-tuned task's reported scores and what the fine-tuning cost."""

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


def _select(scores: list[float], selection: str) -> int:
    """0-based index of the reported epoch; NaN scores (a constant prediction) never win."""
    if selection == "last":
        return len(scores) - 1
    ranked = [(-math.inf if math.isnan(s) else s) for s in scores]
    return ranked.index(max(ranked))


@torch.no_grad()
def predict(model: ClsClassifier, split: EncodedSplit, batch_size: int, device: torch.device
            ) -> Tensor:
    """Class ids (or regression values) for every example of a split, in order."""
    model.eval()
    out = []
    for start in range(0, len(split.idx), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split.idx)))
        ids, mask, types, _ = (t.to(device) for t in split.rows(index))
        logits = model(ids, mask, types).float()
        out.append(logits if logits.ndim == 1 else logits.argmax(-1))
    return torch.cat(out).cpu()


def finetune_task(encoder: BertModel, tokenizer: PreTrainedTokenizerFast, data: TaskData,
                  cfg: FinetuneConfig, *, seed: int, device: torch.device, workdir: Path,
                  log: logging.Logger, limit_train: int | None = None, bf16: bool = False,
                  progress: bool = True) -> tuple[TaskOutcome, list[dict[str, Any]]]:
    """Fine-tune a copy of `encoder` on one task; returns the outcome and the per-example dev
    predictions of the reported epoch. A finished task (workdir/result.json) is not redone."""
    task = data.task
    done = workdir / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text(encoding="utf-8"))
        outcome = TaskOutcome(**saved["outcome"])
        return outcome, _read_jsonl(workdir / f"dev_epoch{outcome.epoch}.jsonl")
    train, dev = encode_task(data, tokenizer, cfg.max_seq_len, limit_train)
    n = len(train.idx)
    if n == 0:
        raise ValueError(f"{data.source}: task {task.name} has no training examples")
    per_epoch = math.ceil(n / cfg.batch_size)
    torch.manual_seed(seed)
    model = ClsClassifier(copy.deepcopy(encoder), task.num_labels, cfg.dropout).to(device)
    weights = (balanced_class_weights(train.labels, task.num_labels).to(device)
               if cfg.class_balanced and not task.is_regression else None)

    def micro_batches(step: int) -> list[tuple[Tensor, ...]]:
        epoch, k = divmod(step, per_epoch)
        order = epoch_permutation(n, seed, epoch)[k * cfg.batch_size: (k + 1) * cfg.batch_size]
        return [tuple(t.to(device) for t in train.rows(order))]

    def loss(batch: tuple[Tensor, ...]) -> Tensor:
        ids, mask, types, labels = batch
        out = model(ids, mask, types).float()
        if task.is_regression:
            return F.mse_loss(out, labels)
        return F.cross_entropy(out, labels, weight=weights)

    def validate(steps: int) -> dict[str, float]:
        epoch = math.ceil(steps / per_epoch)
        predictions = {name: predict(model, split, cfg.eval_batch_size, device)
                       for name, split in dev.items()}
        metrics = evaluate_task(task.name, {name: (dev[name].labels.tolist(), p.tolist())
                                            for name, p in predictions.items()})
        rows = [{"split": name, "idx": i, "label": label, "prediction": p}
                for name, split in dev.items()
                for i, label, p in zip(split.idx, split.labels.tolist(),
                                       predictions[name].tolist(), strict=True)]
        write_text(workdir / f"dev_epoch{epoch}.jsonl",
                   "".join(json.dumps(r) + "\n" for r in rows))
        return {"epoch": float(epoch), **metrics}

    stage = Stage(name=f"glue-{task.name}", model=model, parameters=list(model.parameters()),
                  optim=cfg.optim, micro_batches=micro_batches, loss=loss,
                  items=lambda batch: int(batch[1].sum()), validate=validate,
                  validate_every=per_epoch, checkpoint_every=per_epoch, bf16=bf16, seed=seed,
                  solo=True)
    result = train_stage(stage, StageBudget("steps", cfg.epochs * per_epoch),
                         workdir / "checkpoints", device, log, progress)
    scores = [row["val_score"] for row in result.curve if "val_score" in row]
    chosen = _select(scores, cfg.selection)
    row = [r for r in result.curve if "val_score" in r][chosen]
    metrics = {k[len("val_"):]: v for k, v in row.items()
               if k.startswith("val_") and k != "val_epoch"}
    outcome = TaskOutcome(task=task.name, metrics=metrics, epoch=chosen + 1,
                          epoch_scores=scores, selection=cfg.selection, steps=result.steps,
                          flops=result.flops, tokens=result.items, seconds=result.seconds)
    write_text(done, json.dumps({"outcome": asdict(outcome)}, indent=1) + "\n")
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)  # the scores are what is kept
    return outcome, _read_jsonl(workdir / f"dev_epoch{outcome.epoch}.jsonl")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
