"""What watching a run costs: the same training stage with nothing listening, with the run
folder's live files (curve.jsonl, progress.json), and with each tracker on top (TensorBoard,
MLflow to a local SQLite store, W&B offline), at the default cadence (rows read every 10
steps, a checkpoint every 50 as the demo suite saves them). The goal is 1% or less of step time.

Demo shape (preset tiny, vocabulary 8,192, batch 16 x 128), one process, settings interleaved
(`bench.util.timing.interleaved`), the median of the repeats. Two measures: the wall time of
the stage against nothing listening (what a user waits; on a busy 2-core machine its noise is
a few percent), and the seconds spent inside the listener's calls per training second (the
logging's own cost, exact; work a tracker hands to its own thread or process, W&B's service,
is not in it, but is in the first). A tracker's start (creating its run: a one-off per run)
and its close are outside the timed span.

    python benchmarks/tracking_overhead.py [--steps 60] [--repeats 3] [--trackers ...]
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness_overhead import OPTIM, fresh_model, rows

from bench.contract import StageResult
from bench.execution.live import LiveRun
from bench.lm.objectives import causal_lm_loss
from bench.text.config import CWTConfig
from bench.tracking.tracker import TrackedRun, Trackers
from bench.training.budget import StageBudget
from bench.training.sampling import batch_at
from bench.training.train import Stage, train_stage
from bench.util.timing import interleaved

BATCH = 16
CHECKPOINT_EVERY = 50  # the demo suite's


class TimedLive(LiveRun):
    """The run folder's live files and trackers, the seconds inside each call added up."""

    spent = 0.0

    def started(self, result: StageResult) -> None:
        self._timed(super().started, result)

    def read(self, result: StageResult, rows: list[dict[str, Any]]) -> None:
        self._timed(super().read, result, rows)

    def saved(self, result: StageResult) -> None:
        self._timed(super().saved, result)

    def _timed(self, call: Any, *args: Any) -> None:
        start = time.perf_counter()
        call(*args)
        self.spent += time.perf_counter() - start


def train(data: torch.Tensor, steps: int, folder: Path, trackers: tuple[str, ...] | None
          ) -> tuple[float, float]:
    """(seconds of the stage, seconds inside the listener) in `folder`; no listener at all for
    `trackers` None."""
    model = fresh_model()
    cwt = CWTConfig()
    stage = Stage(name="pretrain", model=model, parameters=list(model.parameters()),
                  optim=OPTIM, micro_batches=lambda k: [batch_at(data, k, BATCH, 0)],
                  loss=lambda ids: causal_lm_loss(model, ids, "softmax", cwt),
                  items=lambda ids: ids.numel(), checkpoint_every=CHECKPOINT_EVERY,
                  validate=lambda _: {"loss": 0.0}, validate_every=100)
    log = logging.getLogger("tracking-overhead")
    live = None
    run_dir = folder / "suite" / "run"
    run_dir.mkdir(parents=True)
    if trackers is not None:
        group = Trackers(trackers, log) if trackers else None
        if group is not None:  # started before the clock, as once per run
            group.start(TrackedRun("0123456789ab", "overhead", "softmax", 0, f"{steps} steps",
                                   {"steps": steps}, run_dir, None, resumed_at=0))
        live = TimedLive(run_dir, ["pretrain"], [], group)
    start = time.perf_counter()
    train_stage(stage, StageBudget("steps", steps), run_dir / "checkpoints",
                torch.device("cpu"), log, progress=False, listener=live)
    took = time.perf_counter() - start
    if live is not None:
        live.close("finished")
    return took, 0.0 if live is None else live.spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trackers", nargs="*", default=["tensorboard", "mlflow", "wandb"])
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    data = rows()
    settings: dict[str, tuple[str, ...] | None] = {"nothing": None, "live files": ()}
    if args.trackers:
        settings["+ " + " + ".join(args.trackers)] = tuple(args.trackers)
    inside: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        folders = iter(range(10**9))

        def task(name: str) -> Callable[[], None]:
            def run() -> None:
                took, spent = train(data, args.steps, Path(tmp) / str(next(folders)),
                                    settings[name])
                inside[name].append(spent / took)
            return run

        train(data, 3, Path(tmp) / "warm", ())  # allocator, kernels, imports
        timings = interleaved({name: task(name) for name in settings}, warmup=0,
                              repeats=args.repeats)
    base = timings["nothing"].median
    print(f"tracking overhead, demo shape (tiny, 16x128), {args.steps} steps, rows read every "
          f"10, a checkpoint every {CHECKPOINT_EVERY}, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    for name, timing in timings.items():
        print(f"  {name:<44} {timing.median / args.steps:8.1f} ms/step   wall ratio to nothing "
              f"{timing.median / base:6.3f}   in the listener "
              f"{100 * statistics.median(inside[name]):6.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
