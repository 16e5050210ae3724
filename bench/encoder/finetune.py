"""The encoder as a `PairClassifier`: GLUE fine-tuning of a pretrained BERT by the CWT paper's
protocol, one task at a time (the GLUE evaluator scores the epochs and picks the reported one).

A fresh copy of the encoder gets a dropout + linear head on the final [CLS] state (the paper's
`pooling: cls`; BERT's pooler is not used, since pretraining without next-sentence prediction never
trains it). Classification trains with cross-entropy, class-balanced by default (weights
n / (C n_c)); STS-B regresses its score with MSE. After every epoch the dev split(s) are predicted
and handed to the evaluator. The steps run through the harness's training loop, so they are
counted in FLOPs and resume after a kill; their compute is the task's own, outside the
pretraining budget. The public code's quirk of applying cross-entropy to softmax outputs (a double
softmax) is not reproduced: the loss takes the logits.

Sequences are [CLS] a [SEP] (b [SEP]), cut longest-first to `max_seq_len`, padded to the longest
framed example of the task (at most `max_seq_len`), so each task has one input shape.
"""

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertModel, PreTrainedTokenizerFast

from bench.contract import Stage
from bench.evals.adapters import Example, FinetuneConfig, Finetuned, TaskSpec
from bench.training.budget import StageBudget
from bench.training.sampling import epoch_permutation
from bench.training.train import train_stage


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


def frame_examples(examples: Sequence[Example], tokenizer: PreTrainedTokenizerFast,
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


def encode_split(examples: Sequence[Example], framed: list[tuple[list[int], list[int]]],
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


def encode_task(train: Sequence[Example], dev: Mapping[str, Sequence[Example]],
                tokenizer: PreTrainedTokenizerFast, max_len: int, regression: bool
                ) -> tuple[EncodedSplit, dict[str, EncodedSplit]]:
    """Training and dev splits as tensors of one width: the task's longest framed example."""
    splits = {"train": train, **dev}
    framed = {name: frame_examples(ex, tokenizer, max_len) for name, ex in splits.items()}
    width = max(len(ids) for rows in framed.values() for ids, _ in rows)
    encoded = {name: encode_split(splits[name], framed[name], width, tokenizer.pad_token_id,
                                  regression) for name in splits}
    train_split = encoded.pop("train")
    return train_split, encoded


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
        # A DistilBERT-style encoder has one segment embedding: both sentences of a pair use it.
        types = token_type_ids.clamp(max=self.encoder.config.type_vocab_size - 1)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=types).last_hidden_state
        logits = self.head(self.dropout(hidden[:, 0]))
        return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


def balanced_class_weights(labels: Tensor, num_labels: int) -> Tensor:
    """n / (C n_c) per class (scikit-learn's 'balanced'); a class absent from training gets 0."""
    counts = torch.bincount(labels, minlength=num_labels).double()
    weights = torch.where(counts > 0, len(labels) / (num_labels * counts.clamp(min=1)), 0.0)
    return weights.float()


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


@dataclass
class BertPairClassifier:
    """A pretrained BERT encoder as a `PairClassifier`: every task fine-tunes a fresh copy of
    `encoder` with a [CLS] head through the harness's training loop (resumable from `scratch`)."""

    encoder: BertModel
    tokenizer: PreTrainedTokenizerFast
    device: torch.device
    log: logging.Logger
    bf16: bool = False
    progress: bool = True

    def finetune(self, task: TaskSpec, train: Sequence[Example],
                 dev: Mapping[str, Sequence[Example]], settings: FinetuneConfig, *, seed: int,
                 scratch: Path,
                 score_epoch: Callable[[int, dict[str, list[float]]], dict[str, float]]
                 ) -> Finetuned:
        """`PairClassifier.finetune`; `seed` fixes the head's initialisation, the dropout and
        each epoch's order, so a task's numbers repeat exactly."""
        train_split, dev_splits = encode_task(train, dev, self.tokenizer, settings.max_seq_len,
                                              task.is_regression)
        per_epoch = math.ceil(len(train_split.idx) / settings.batch_size)
        torch.manual_seed(seed)
        model = ClsClassifier(copy.deepcopy(self.encoder), task.num_labels,
                              settings.dropout).to(self.device)

        def validate(steps: int) -> dict[str, float]:
            predictions = {name: predict(model, split, settings.eval_batch_size,
                                         self.device).tolist()
                           for name, split in dev_splits.items()}
            return score_epoch(math.ceil(steps / per_epoch), predictions)

        stage = self._stage(task, model, train_split, settings, seed, per_epoch, validate)
        result = train_stage(stage, StageBudget("steps", settings.epochs * per_epoch), scratch,
                             self.device, self.log, self.progress)
        epochs = [{k[len("val_"):]: v for k, v in row.items() if k.startswith("val_")}
                  for row in result.curve]
        return Finetuned(epochs=[e for e in epochs if e], steps=result.steps, flops=result.flops,
                         tokens=result.items, seconds=result.seconds)

    def _stage(self, task: TaskSpec, model: ClsClassifier, train: EncodedSplit,
               settings: FinetuneConfig, seed: int, per_epoch: int,
               validate: Callable[[int], dict[str, float]]) -> Stage:
        """The task's training stage: epochs of seeded permutations, one batch per step."""
        n, device = len(train.idx), self.device
        weights = (balanced_class_weights(train.labels, task.num_labels).to(device)
                   if settings.class_balanced and not task.is_regression else None)

        def micro_batches(step: int) -> list[tuple[Tensor, ...]]:
            epoch, k = divmod(step, per_epoch)
            order = epoch_permutation(n, seed, epoch)[
                k * settings.batch_size: (k + 1) * settings.batch_size]
            return [tuple(t.to(device) for t in train.rows(order))]

        def loss(batch: tuple[Tensor, ...]) -> Tensor:
            ids, mask, types, labels = batch
            out = model(ids, mask, types).float()
            if task.is_regression:
                return F.mse_loss(out, labels)
            return F.cross_entropy(out, labels, weight=weights)

        return Stage(name=f"glue-{task.name}", model=model, parameters=list(model.parameters()),
                     optim=settings.optim, micro_batches=micro_batches, loss=loss,
                     items=lambda batch: int(batch[1].sum()), validate=validate,
                     validate_every=per_epoch, checkpoint_every=per_epoch, bf16=self.bf16,
                     seed=seed, solo=True)
