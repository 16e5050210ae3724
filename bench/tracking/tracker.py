"""What a training run tells a tracker, and the trackers of one run kept apart from its training.

A tracker run is keyed by the harness's run id, so a resumed or requeued run continues the
same tracker run: `start` says where the run resumes (`TrackedRun.resumed_at`, the last step
its checkpoint holds) and answers the last step the tracker already holds; rows at or below
it are not sent again, so no step is logged twice. Only rank 0 of a run tracks.

A tracker that fails (a server down, a full disk) is a warning naming it, once; it is then
left out for the rest of the run, and training goes on: the run folder stays the record.
"""

import logging
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.tracking.registry import new_tracker


@dataclass(frozen=True)
class TrackedRun:
    """A run as trackers see it: keyed by its id, its resolved config as parameters, its
    place (suite, variant, seed, budget; a sweep's trials share their study's suite name, so
    they are runs of one experiment or group), where it resumes."""

    run_id: str
    suite: str
    variant: str
    seed: int
    budget: str  # in words: `4e+12 flops`
    config: dict[str, Any]
    folder: Path
    commit: str | None
    resumed_at: int  # the last step its checkpoint holds (0: a fresh start)

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed} ({self.budget})"

    @property
    def tags(self) -> dict[str, str]:
        return {"run_id": self.run_id, "suite": self.suite, "variant": self.variant,
                "seed": str(self.seed), "budget": self.budget, "commit": self.commit or ""}


class Tracker(Protocol):
    """One tracker for one run."""

    def start(self, run: TrackedRun) -> int:
        """Open or continue the tracker run of `run`; the last step it holds (0: none)."""
        ...

    def log(self, rows: list[dict[str, Any]]) -> None:
        """Curve rows (the run's axis): each number a point of its column's series at
        `row["step"]`."""
        ...

    def flush(self) -> None:
        """Make what was logged durable (the run saved a checkpoint)."""
        ...

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        """The run's final metrics, and its record's files as artefacts where it keeps any."""
        ...

    def close(self, ended: str) -> None:
        """Let go, the run `ended` as: finished, failed, pruned, or interrupted (it resumes
        later: preempted, out of time, cancelled)."""
        ...


def numbers(row: dict[str, Any]) -> dict[str, float]:
    """A row's numeric columns (not its step, text, or a missing value)."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}


class Trackers:
    """The trackers of one run (`names`), each call kept from failing the run."""

    def __init__(self, names: tuple[str, ...], log: logging.Logger) -> None:
        self.names, self.log = names, log
        self.live: dict[str, Tracker] = {}
        self.held: dict[str, int] = {}  # the last step each tracker already holds

    def start(self, run: TrackedRun) -> None:
        for name in self.names:
            tracker = self._call(name, new_tracker, name)
            if tracker is None:
                continue
            self.live[name] = tracker
            held = self._call(name, tracker.start, run)  # left out (warned) where it fails
            if held is not None:
                self.held[name] = held

    def log_rows(self, rows: list[dict[str, Any]]) -> None:
        for name, tracker in list(self.live.items()):
            new = [r for r in rows if r["step"] > self.held[name]]
            if new:
                self._call(name, tracker.log, new)

    def flush(self) -> None:
        for name, tracker in list(self.live.items()):
            self._call(name, tracker.flush)

    def finish(self, metrics: dict[str, float], files: list[Path]) -> None:
        for name, tracker in list(self.live.items()):
            self._call(name, tracker.finish, metrics, files)

    def close(self, ended: str) -> None:
        for name, tracker in list(self.live.items()):
            self._call(name, tracker.close, ended)
        self.live.clear()

    def _call(self, name: str, call: Any, *args: Any) -> Any:
        """`call(*args)`; where it raises, a warning naming the tracker, which is left out
        (closed as failed, where it can be)."""
        try:
            return call(*args)
        except Exception as err:  # a tracker's failure never fails the run
            tracker = self.live.pop(name, None)
            message = (f"tracker {name} failed ({type(err).__name__}: {str(err)[:300]}); the "
                       "run goes on without it, its folder is the record")
            self.log.warning(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)
            if tracker is not None and getattr(call, "__name__", "") != "close":
                with suppress(Exception):  # already failing: its close may fail too
                    tracker.close("failed")
            return None
