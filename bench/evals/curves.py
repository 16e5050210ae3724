"""Evaluation results as plain data: curves and the areas under them, ready to tabulate or plot.

Every face-detection evaluator returns these, so reports and the CLI treat them alike.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np


def ap_all_points(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-points average precision (MATLAB VOCap.m, and the VOC devkit since 2010).

    Pads recall with 0 and 1 and precision with 0 and 0, makes precision monotone from the right
    with a maximum that ignores NaN (MATLAB's `max` does: a threshold with no proposal has
    precision 0/0 and must not poison the envelope), then sums precision over recall steps.
    """
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=float), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=float), [0.0]])
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point average precision: mean over r in {0, 0.1, ..., 1} of the best precision
    at recall >= r (0 where no point reaches r)."""
    recall, precision = np.asarray(recall, dtype=float), np.asarray(precision, dtype=float)
    total = 0.0
    for r in np.linspace(0, 1, 11):
        reached = precision[recall >= r]
        total += float(np.nanmax(reached)) if reached.size and not np.all(np.isnan(reached)) else 0
    return total / 11


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall at a sequence of score thresholds, and the AP computed from them."""

    kind: ClassVar[Literal["pr"]] = "pr"
    name: str
    recall: np.ndarray
    precision: np.ndarray
    ap: float
    thresholds: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """The points as plotted: recall across, precision up."""
        return self.recall, self.precision

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "ap": self.ap, "recall": _floats(self.recall),
                "precision": _floats(self.precision),
                "thresholds": None if self.thresholds is None else _floats(self.thresholds),
                **self.extra}


@dataclass(frozen=True)
class ROCCurve:
    """True-positive rate against the number of false positives (FDDB's free-response ROC)."""

    kind: ClassVar[Literal["roc"]] = "roc"
    name: str
    tpr: np.ndarray
    false_positives: np.ndarray
    thresholds: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def tpr_at(self, fp_limit: float) -> float:
        """Best true-positive rate among the points with at most `fp_limit` false positives."""
        ok = self.false_positives <= fp_limit
        return float(np.max(self.tpr[ok])) if ok.any() else 0.0

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """The points as plotted: false positives across, true-positive rate up."""
        return self.false_positives, self.tpr

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "tpr": _floats(self.tpr),
                "false_positives": _floats(self.false_positives),
                "thresholds": _floats(self.thresholds), **self.extra}


Curve = PRCurve | ROCCurve  # every curve says its kind ("pr" or "roc") and its plotted points


def _floats(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: it becomes null."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=float)]
