"""What evaluators need from a model: small protocols a family's trained model is wrapped in.

A family hands `RunContext.evaluate` one object that provides some of these; an evaluator
declares the one it `needs`. Evaluators see nothing else of a model, so any family whose models
provide a protocol can be scored by every evaluator that needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import Field

from bench.schema import Float, Int, OptimConfig, Strict

if TYPE_CHECKING:
    import numpy as np
    from lm_eval.api.model import LM

    from bench.util.timing import Timing

Size = tuple[int, int]  # (shortest side, cap on the longest side), in pixels
Mode = Literal["single", "pyramid"]


@runtime_checkable
class ContinuationScorer(Protocol):
    """A language model that scores text continuations: for each (context, continuation), the
    log-likelihood of the continuation and whether greedy decoding produces it. It is offered as
    an lm-eval model, so that lm-eval's own tasks, metrics and stderrs score it."""

    device: str

    def lm_eval_model(self, batch_size: int) -> AbstractContextManager[LM]:
        """The model as lm-eval's `LM` for the duration of the block (in eval mode, on
        `device`; put back as it was afterwards)."""
        ...

    def saved(self) -> Path | None:
        """The same model as a standard Hugging Face folder (what the `lm_eval` command
        loads), when it has been saved."""
        ...


# ---- the pair-classifier vocabulary: what a task is, an example, the fine-tuning protocol

@dataclass(frozen=True)
class TaskSpec:
    """What the harness needs to know of a task: its folders, label count, dev splits, metrics."""

    name: str
    folder: str
    num_labels: int
    dev_splits: tuple[str, ...]
    metrics: tuple[str, ...]
    score: str

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


@dataclass(frozen=True)
class Example:
    """One labelled example; `idx` pairs it with its prediction."""

    idx: int
    text_a: str
    text_b: str | None
    label: int | float


class FinetuneConfig(Strict):
    """The GLUE fine-tuning protocol; the defaults are the CWT paper's (Table 1)."""

    epochs: Int = Field(10, gt=0)
    batch_size: Int = Field(32, gt=0)
    optim: OptimConfig = OptimConfig(lr=1e-5, schedule="constant", warmup=0.1, clip=None)
    class_balanced: bool = Field(True, description="cross-entropy weighted by inverse frequency")
    dropout: Float = Field(0.1, ge=0, lt=1, description="on the pooled [CLS] vector")
    max_seq_len: Int = Field(128, gt=2)
    selection: Literal["best", "last"] = Field(
        "best", description="which epoch's dev scores are reported: the best one or the last"
    )
    eval_batch_size: Int = Field(128, gt=0)


@dataclass(frozen=True)
class Finetuned:
    """What fine-tuning a pair classifier on one task gave: the scores `score_epoch` returned
    for every epoch, in order, and what the fine-tuning cost."""

    epochs: list[dict[str, float]]
    steps: int
    flops: float
    tokens: int
    seconds: float


@runtime_checkable
class PairClassifier(Protocol):
    """A pretrained encoder fine-tuned to classify (or score, for regression) single sentences
    and sentence pairs, one task at a time, from the same pretrained weights each time."""

    def finetune(self, task: TaskSpec, train: Sequence[Example],
                 dev: Mapping[str, Sequence[Example]], settings: FinetuneConfig, *, seed: int,
                 scratch: Path,
                 score_epoch: Callable[[int, dict[str, list[float]]], dict[str, float]]
                 ) -> Finetuned:
        """Fine-tune a fresh copy on `train` for `settings.epochs` epochs; after each epoch,
        hand `score_epoch(epoch, {dev split: predictions in order})` the dev predictions (class
        ids, or values for regression). Resumable state goes to `scratch`, which the caller
        removes once the task's result is recorded."""
        ...


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector run on image files, at one scale or an image pyramid."""

    def detect(self, images: Sequence[Path], mode: Mode, size: Size, listed_in: str
               ) -> tuple[list[np.ndarray], Timing]:
        """Boxes [x1 y1 x2 y2 score] of every image, in its own pixels; 'single' resizes an
        image by `size`, 'pyramid' uses `size` as the pyramid's base. Also the ms each image
        took. `listed_in` names the file that listed the images (for errors)."""
        ...

    def time(self, sizes: Sequence[Size], modes: Sequence[Mode], *, warmup: int, repeats: int,
             channels_last: bool) -> dict[tuple[Mode, Size], Timing]:
        """ms per image of synthetic images of each maximum size and mode, all timed in the
        same interleaved rounds."""
        ...


