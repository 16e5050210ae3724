"""A training run's folder kept live: the curve as it grows and where the run stands.

While a stage trains, rank 0's `LiveRun` hears it (`bench.training.train.StageListener`) and
keeps two files in the run's folder (their format is `bench/store/folder.py`'s):
- `curve.jsonl`: the rows curve.csv will hold at the end, on the run's one axis (steps, tokens
  and FLOPs accumulate over stages: `combined_curve`), appended as they reach the host (every
  few steps, validations with them), fsynced at each checkpoint, and rewritten from the
  checkpoint where a stage resumes, so rows a killed process trained after its last checkpoint
  are dropped as its training state is;
- `progress.json`: the stage, its step and horizon, the last loss and validation, when this
  process began and the steps it took since (`bench status` measures the rate and the ETA
  from it), rewritten at most every PROGRESS_EVERY_S seconds, and at each validation, save
  and stage start.

The run's trackers (bench/tracking: TensorBoard, MLflow, W&B) hear the same rows as they are
appended, a flush at each checkpoint, the final metrics and the record's files at the end; they
start where the process starts the run (`resumed_at`: the last step of the rows its checkpoint
holds, where the run had started before; 0 at its first start, even when it starts from a
longer rung's branch checkpoint), and are sent the rows it holds that they do not.
"""

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.contract import StageResult
from bench.store.folder import LiveCurve, write_progress
from bench.tracking.tracker import TrackedRun, Trackers
from bench.training.train import StageListener

PROGRESS_EVERY_S = 2.0


def _offset(stages: list[StageResult]) -> dict[str, float]:
    """Where a stage after `stages` starts on the run's axis."""
    return {"step": sum(s.steps for s in stages), "tokens": sum(s.items for s in stages),
            "flops": float(sum(s.flops for s in stages))}


def _shifted(row: dict[str, Any], offset: dict[str, float]) -> dict[str, Any]:
    return row | {k: row[k] + v for k, v in offset.items()}


def combined_curve(stages: list[StageResult]) -> list[dict[str, Any]]:
    """Stages' curves on one axis: steps, tokens and FLOPs accumulate across stages."""
    return [_shifted(r, _offset(stages[:i])) for i, s in enumerate(stages) for r in s.curve]


def _last_validation(rows: list[dict[str, Any]]) -> tuple[int | None, dict[str, float] | None]:
    """The stage step and `val_*` metrics of the newest row that holds a validation."""
    for row in reversed(rows):
        metrics = {k: v for k, v in row.items() if k.startswith("val_")}
        if metrics:
            return row["step"], metrics
    return None, None


class LiveRun(StageListener):
    """The live files of the run in `folder` whose stages are named `stages`; `done` is the
    run's list of finished stage records (the context's own, which grows as stages end);
    `trackers` follow the run `tracked` describes."""

    def __init__(self, folder: Path, stages: list[str], done: list[StageResult],
                 trackers: Trackers | None = None, tracked: TrackedRun | None = None) -> None:
        self.folder, self.stages, self.done = folder, stages, done
        self.trackers, self.tracked = trackers, tracked
        self.curve = LiveCurve(folder)
        self.began = time.time()
        self.progress: dict[str, Any] = {}
        self._written = -math.inf
        self._offset = _offset(done)  # where the current stage starts on the run's axis

    def started(self, result: StageResult) -> None:
        rows = combined_curve([*self.done, result])
        self._offset = _offset(self.done)
        resumed = self.curve.path.exists()  # else the run's first start: no tracker has it
        self.curve.restart(rows)
        if self.trackers is not None and self.tracked is not None:  # the first stage it starts
            self.trackers.start(replace(self.tracked, resumed_at=rows[-1]["step"]
                                        if rows and resumed else 0))
            self.trackers.log_rows(rows)  # each gets the rows it does not hold (a branch's)
            self.trackers.flush()
            self.tracked = None
        at, metrics = _last_validation(result.curve)
        now = time.time()
        self.progress = {"stages": self.stages, "stage_index": len(self.done),
                         "began": self.began, "since": now, "since_step": result.steps,
                         "validation": metrics, "validated_at": at}
        self._note(result, now, force=True)

    def read(self, result: StageResult, rows: list[dict[str, Any]]) -> None:
        shifted = [_shifted(r, self._offset) for r in rows]
        self.curve.append(shifted)
        if self.trackers is not None:
            self.trackers.log_rows(shifted)
        at, metrics = _last_validation(rows[-1:])
        if metrics is not None:
            self.progress |= {"validation": metrics, "validated_at": at}
        self._note(result, time.time(), force=metrics is not None)

    def saved(self, result: StageResult) -> None:
        self.curve.sync()
        if self.trackers is not None:
            self.trackers.flush()
        self._note(result, time.time(), force=True)

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        """The run finished: its final metrics and record files to the trackers."""
        if self.trackers is not None:
            self.trackers.finish(metrics, files)

    def close(self, ended: str) -> None:
        """Let go of the files and trackers; the run `ended` as finished, failed, pruned or
        interrupted (see `bench.tracking.tracker.Tracker.close`)."""
        self.curve.close()
        if self.trackers is not None:
            self.trackers.close(ended)

    def _note(self, result: StageResult, now: float, force: bool) -> None:
        """progress.json brought up to `result`, when forced or due."""
        loss = result.final_loss
        self.progress |= {"stage": result.name, "step": result.steps, "horizon": result.horizon,
                          "loss": loss if math.isfinite(loss) else None,
                          "seconds": result.seconds, "updated": now}
        if force or now - self._written >= PROGRESS_EVERY_S:
            write_progress(self.folder, self.progress)
            self._written = now
