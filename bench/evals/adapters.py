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

from bench.schema import Int, Strict

if TYPE_CHECKING:
    import numpy as np
    from lm_eval.api.model import LM

    from bench.evals.glue import Example, FinetuneConfig, TaskSpec
    from bench.timing import Timing

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


class DetectionScales(Strict):
    """How a face-detection evaluation resizes images: single scale and the pyramid's base
    (published: 1200 / 1600 and 800 / 1200 on WIDER FACE)."""

    modes: list[Mode] = ["single"]
    short: Int = Field(1200, gt=0, description="single scale: shortest side")
    long: Int = Field(1600, gt=0, description="single scale: cap on the longest side")
    pyramid_short: Int = Field(800, gt=0, description="pyramid base: shortest side")
    pyramid_long: Int = Field(1200, gt=0, description="pyramid base: cap on the longest side")

    def size(self, mode: Mode) -> Size:
        return (self.short, self.long) if mode == "single" else (
            self.pyramid_short, self.pyramid_long)
