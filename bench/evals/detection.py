"""What the face-detection evaluators on image sets (WIDER FACE, FDDB, Pascal Faces) share: each
scores every mode its config names in turn, adds the ms each image took, and names metrics and
curves `<mode>.<name>` (per-image rows `samples_<evaluator>_<mode>.jsonl`); each checks before
training that every image it will read is there."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from bench.errors import UserError
from bench.evals.adapters import Mode, Size
from bench.evals.curves import Curve
from bench.evals.evaluator import EvalResult
from bench.schema import Int, Strict
from bench.util.timing import Timing

TIMED = "ms_per_image"  # the median ms a detection of one image took (with .iqr and .n)

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


@dataclass(frozen=True)
class ModeScored:
    """One mode scored: the protocol's metrics and curves, the detection times, and the
    per-image rows paired tests read (none where the protocol has no per-image rule)."""

    metrics: dict[str, float]
    curves: Mapping[str, Curve]
    took: Timing
    samples: list[dict[str, Any]] = field(default_factory=list)


ModeScore = Callable[[Mode, Size], ModeScored]  # a mode and its size, scored


def row_count(value: object, name: str) -> int:
    """A count an image's per-image row holds (ValueError for anything else, a bool included:
    JSON's true is not 1 here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected a count, found {value!r}")
    return value


def row_indices(value: object, below: int, name: str, increasing: bool = False) -> np.ndarray:
    """A list of indices 0..below-1 an image's per-image row holds (strictly increasing where
    asked), as int64; ValueError for anything else."""
    found = np.asarray(value)
    if not isinstance(value, list) or (found.size and (
            found.dtype.kind != "i" or found.min() < 0 or found.max() >= below
            or (increasing and np.any(np.diff(found) <= 0)))):
        raise ValueError(f"{name}: expected a list of {'increasing ' * increasing}indices "
                         f"0..{below - 1}")
    return found.astype(np.int64)


def check_images(paths: Sequence[Path], listed_in: str) -> None:
    """Every image the ground truth lists is a file, so a run does not train for hours and then
    find its evaluation images missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: image missing (listed in {listed_in}); {len(missing)} of "
                        f"the {len(paths)} images are missing")


def score_modes(config: DetectionScales, score: ModeScore) -> EvalResult:
    """Every mode of `config` scored by `score`, in order, as one result."""
    result = EvalResult({})
    for mode in config.modes:
        scored = score(mode, config.size(mode))
        result.metrics |= {f"{mode}.{k}": v
                           for k, v in (scored.metrics | scored.took.metrics(TIMED)).items()}
        result.curves |= {f"{mode}.{k}": curve for k, curve in scored.curves.items()}
        if scored.samples:
            result.samples[mode] = scored.samples
    return result


def mode_metrics(config: DetectionScales, scores: Sequence[str]) -> list[str]:
    """What `score_modes` records for `config`: each mode's `scores` and its timing."""
    return [f"{mode}.{name}" for mode in config.modes
            for name in (*scores, *Timing.names(TIMED))]


def direction(metric: str, accuracy: Callable[[str], bool]) -> bool | None:
    """Which way `<mode>.<name>` is better: up for what `accuracy(name)` accepts, down for the
    ms per image; neither for the timing's spread and count."""
    name = metric.partition(".")[2]
    if name == TIMED:
        return False
    return True if accuracy(name) else None
