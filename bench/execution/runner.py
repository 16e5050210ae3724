"""Executes planned runs: skip finished ones, train under budget, evaluate, record, go on."""

import errno
import io
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.contract import Family, RunSpec, Stage, StageResult, stages_of
from bench.errors import ClaimRefused, Pruned, RunFailed
from bench.evals.evaluator import EvalSetting
from bench.evals.registry import get_evaluator
from bench.execution.live import LiveRun, combined_curve
from bench.store import provenance
from bench.store.folder import RECORD_FILES, samples_file, write_jsonl
from bench.store.runs import Store
from bench.tracking.tracker import TrackedRun, Trackers
from bench.training.accelerators import efficiency_metrics
from bench.training.budget import StageBudget, split_budget
from bench.training.checkpoints import Branches, drop_branch_file
from bench.training.distributed import from_main, world
from bench.training.train import train_stage
from bench.util.atomic import enter_dir, open_append, remove_stale_temporaries
from bench.util.timing import step_rate

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a write failed for want of space


@dataclass
class RunFolderContext:
    """The `RunContext` (bench.contract) of a run this process trains: its folder, log, device
    and budget; what it records is written to the folder when the run finishes."""

    run: RunSpec
    dir: Path
    device: torch.device
    log: logging.Logger
    budgets: dict[str, StageBudget]
    cache_dir: Path
    progress: bool = True
    stages: list[StageResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    points: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # what the family adds to it
    # Hears each validation: (progress over stages: stage index + fraction spent, metrics).
    monitor: Callable[[float, dict[str, float]], None] | None = None
    restart_corrupt: bool = False  # a stage whose checkpoints are all unusable starts afresh
    data_root: str | None = None  # the family's training data folder, offered to evaluators
    commit: str | None = None  # the code's git commit, which trackers tag the run with
    live: LiveRun | None = None  # the run folder's live files, kept by rank 0 once it trains

    @property
    def main(self) -> bool:
        """Whether this process writes the run and evaluates it (rank 0 of a torchrun job)."""
        return world().main

    def train(self, stage: Stage) -> StageResult:
        index = len(self.stages)
        monitor = self.monitor
        hear = (None if monitor is None
                else lambda done, metrics: monitor(index + done, metrics))
        if self.live is None and self.main:
            self.live = self._live_run()
        budget = self.run.variant.budget
        result = train_stage(stage, self.budgets[stage.name], self.dir / "checkpoints",
                             self.device, self.log, self.progress, hear, self.restart_corrupt,
                             Branches.of_rung(self.run, stage, self.budgets, self.dir,
                                              self._heard_branch) if index == 0 else None,
                             self.live, f"{self.run.variant.name} seed {self.run.seed} "
                             f"({budget.amount:.4g} {budget.unit})")
        self.stages.append(result)
        return result

    def _live_run(self) -> LiveRun:
        """The run folder's live files and the run's trackers, for rank 0 once it trains."""
        run, budget = self.run, self.run.variant.budget
        tracked = TrackedRun(run.run_id, run.suite, run.variant.name, run.seed,
                             f"{budget.amount:.4g} {budget.unit}", run.resolved, self.dir,
                             self.commit, resumed_at=0)
        trackers = Trackers(run.tracking, self.log) if run.tracking else None
        return LiveRun(self.dir, list(self.budgets), self.stages, trackers, tracked)

    @contextmanager
    def tracked(self) -> Iterator[None]:
        """Within: the run's work; after, its live files and trackers let go, told how it
        ended (finished once `finish` was heard)."""
        ended = "failed"
        try:
            yield
            ended = "finished"
        except Pruned:
            ended = "pruned"
            raise
        except (SystemExit, KeyboardInterrupt):  # a warned, cancelled or preempted job
            ended = "interrupted"
            raise
        finally:
            if self.live is not None:
                self.live.close(ended)

    def _heard_branch(self, branched: dict[str, Any]) -> None:
        self.provenance["branched_from"] = {"run": branched["run"], "step": branched["step"]}

    def record(self, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)

    def evaluate(self, model: object) -> None:
        """Score `model` with every evaluator of the variant, in the suite's order, each in
        its own folder `<run>/<name>/`; record metrics as `<name>.<metric>`, curves as
        `<kind>:<name>.<curve>` and per-example rows as `samples_<name>[_<key>].jsonl`."""
        for name, cfg in self.run.variant.evals:
            evaluator = get_evaluator(name)
            if not isinstance(model, evaluator.needs):
                raise TypeError(f"evaluator {name!r} needs a {evaluator.needs.__name__}; the "
                                f"family handed over a {type(model).__name__}")
            workdir = enter_dir(self.dir, name)  # refused when it is a link
            result = evaluator.evaluate(cfg, model, EvalSetting(
                workdir, self.log, self.run.seed, self.data_root, self.progress))
            self.record({f"{name}.{k}": v for k, v in result.metrics.items()})
            for key, curve in result.curves.items():
                self.record_curve(f"{curve.kind}:{name}.{key}", *curve.xy())
            for key, rows in result.samples.items():
                self.save_samples(f"{name}_{key}" if key else name, rows)
            self.provenance |= {f"{name}.{k}": v for k, v in result.provenance.items()}
            self.log.info("%s: %s", name, result.metrics)

    def record_curve(self, name: str, x: Any, y: Any) -> None:
        """An evaluation curve for the report's figures, named `pr:...` (x recall, y precision)
        or `roc:...` (x false positives, y true-positive rate). NaN points are dropped (a
        precision of 0/0 has no place on a plot)."""
        pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True)
                 if not (math.isnan(a) or math.isnan(b))]
        self.points[name] = ([a for a, _ in pairs], [b for _, b in pairs])

    def save_samples(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Per-example evaluation outputs (for paired tests between variants)."""
        write_jsonl(self.dir / samples_file(name), rows)


class _RunLogFile(logging.FileHandler):
    """The run's log: a line that cannot be written (a full disk) is dropped, without the
    traceback `logging` would print, since the run's failure is reported anyway."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def _open(self) -> io.TextIOWrapper:
        """Appending without following a link planted at the log's path (one is replaced)."""
        return open_append(Path(self.baseFilename), self.encoding)


def _run_logger(run: RunSpec, path: Path) -> logging.Logger:
    log = logging.getLogger(f"bench.run.{run.run_id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = _RunLogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _training_metrics(stages: list[StageResult], unit: str, device_name: str
                      ) -> dict[str, float]:
    """Totals per run and per stage. Throughput (`train.<unit>_per_s`) is the median per-step
    rate of the first stage after its warm-up steps, with its spread: a single total / total
    would carry every stall of a busy machine. A stage too short for that gets total / total.
    Efficiency: model FLOP/s over all training seconds, MFU where the device's peak is known,
    the most device memory any stage allocated (GPUs), and the processes that trained."""
    total = {"steps": sum(s.steps for s in stages), "flops": sum(s.flops for s in stages),
             unit: sum(s.items for s in stages), "seconds": sum(s.seconds for s in stages)}
    out = {f"train.{k}": float(v) for k, v in total.items()}
    out[f"train.{unit}_per_s"] = total[unit] / total["seconds"] if total["seconds"] else 0.0
    processes = max((s.world_size for s in stages), default=1)
    out["train.world_size"] = float(processes)
    if total["seconds"] > 0:
        out |= {f"train.{k}": v for k, v in efficiency_metrics(
            total["flops"], total["seconds"], device_name, processes).items()}
    peaks = [s.peak_memory for s in stages if not math.isnan(s.peak_memory)]
    if peaks:
        out["train.peak_memory_bytes"] = max(peaks)
    for i, s in enumerate(stages):
        out |= {f"train.{s.name}.steps": s.steps, f"train.{s.name}.flops": s.flops,
                f"train.{s.name}.{unit}": s.items, f"train.{s.name}.seconds": s.seconds,
                f"train.{s.name}.final_loss": s.final_loss}
        rate = step_rate(s.curve)
        if rate.n:
            out |= rate.metrics(f"train.{s.name}.{unit}_per_s")
            if i == 0:
                out |= rate.metrics(f"train.{unit}_per_s")
    return out


def execute_run(run: RunSpec, family: Family, store: Store, device: torch.device,
                cache_dir: Path, progress: bool = True,
                monitor: Callable[[float, dict[str, float]], None] | None = None,
                restart_corrupt: bool = False) -> str | None:
    """Run one RunSpec to the end; returns None on success, else the failure reason.

    A `monitor` hears every validation and may raise Pruned: the run is then recorded as
    'pruned' and Pruned propagates to the caller (a sweep).
    """
    here = world()
    prov = provenance.collect(device) | {"inputs": run.inputs, "world_size": here.size} | (
        {"overrides": list(run.overrides)} if run.overrides else {})
    begun: Path | ClaimRefused | str | None = None
    if here.main:  # the one process that claims and writes the run
        try:  # a link standing for the run's folder, or its suite's, is refused, not written to
            begun = store.begin(run.suite, run.variant.name, run.seed, run.run_id, run.resolved,
                                prov)
        except ClaimRefused as e:
            begun = e
        except OSError as e:  # not claimed, so there is nowhere to record it
            begun = failure_reason(e, store)
            _say_unrecorded(run, "its start", begun)
    begun = from_main(begun)
    if isinstance(begun, ClaimRefused):
        raise begun
    if isinstance(begun, str):
        return begun
    assert isinstance(begun, Path)
    path = begun
    log = logging.getLogger(f"bench.run.{run.run_id}")
    try:  # opened only once the run is ours; other processes keep their own logs beside it
        log = _run_logger(run, path / ("run.log" if here.main else f"run.rank{here.rank}.log"))
        for stale in remove_stale_temporaries(path) if here.main else []:
            log.info("removed %s, left by an interrupted write", stale.name)  # a killed owner's
        log.info("run %s: suite %s, variant %s, seed %d, device %s (%s)", run.run_id, run.suite,
                 run.variant.name, run.seed, device, prov["device_name"])
        stages = stages_of(family, run.variant)  # none: a reference variant's checkpoint
        ctx = RunFolderContext(run, path, device, log, split_budget(run.variant.budget, stages),
                               cache_dir, progress, monitor=monitor,
                               restart_corrupt=restart_corrupt,
                               data_root=family.data_root(run.config), commit=prov["git_commit"])
        for name, cfg in run.variant.evals:  # missing evaluation data fails before training
            get_evaluator(name).check(cfg, ctx.data_root)
        work = family.execute if run.variant.trains else family.score
        if here.main:
            # machines that share the folder see it alive; its live files are let go after
            with store.heartbeat(run.run_id), ctx.tracked():
                work(run, ctx)
                _record_success(family, store, ctx, prov)
            drop_branch_file(run, stages, path, log)
        elif run.variant.trains:  # a checkpoint is scored by rank 0 alone
            work(run, ctx)
    except Pruned as e:
        log.info("run pruned: %s", e)
        _record_end(store, run, f"pruned: {e}", "pruned")
        raise
    except ClaimRefused as e:  # taken over meanwhile: the new owner records how it ends
        log.error("run abandoned: %s", e)
        return str(e)
    except Exception as e:  # a failed run is recorded, and the suite goes on
        reason = failure_reason(e, store)
        log.error("run failed: %s\n%s", reason, traceback.format_exc())
        if here.main:
            _record_end(store, run, reason, "failed")
        elif not isinstance(e, RunFailed):
            # Only a training failure (a non-finite loss, seen alike by every process) leaves
            # the processes in step; otherwise rank 0 may wait in a collective forever, so
            # this process ends the job and torchrun stops the others (the run resumes).
            raise
        return reason
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
    return None


def _record_success(family: Family, store: Store, ctx: RunFolderContext,
                    prov: dict[str, Any]) -> None:
    """Record the run's results (curves, metrics, provenance) in its folder, finished; a run
    that trained nothing (a reference variant's) records no training metrics."""
    trained = _training_metrics(ctx.stages, family.item_unit, prov["device_name"]) \
        if ctx.stages else {}
    metrics = trained | ctx.metrics
    prov = prov | ctx.provenance | {"ended": provenance.now()}
    store.finish(ctx.run.run_id, metrics, combined_curve(ctx.stages), prov, ctx.points)
    if ctx.live is not None:
        ctx.live.finish(metrics, [ctx.dir / name for name in RECORD_FILES])


def failure_reason(e: Exception, store: Store) -> str:
    """Why a run failed, in words; a full disk says what could not be written."""
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return f"{os.strerror(e.errno).lower()} while writing {e.filename or store.root}"
    return f"{type(e).__name__}: {e}"


def _record_end(store: Store, run: RunSpec, reason: str, state: str) -> None:
    """Record a run that ended without finishing. When even that cannot be written (a full
    disk), say so and release the claim, so that the next `bench run` resumes the run."""
    try:
        store.fail(run.run_id, reason, provenance.now(), state)
    except ClaimRefused as e:
        _say_unrecorded(run, f"that it {state}", f"it is {e.status}")
    except OSError as e:
        _say_unrecorded(run, f"that it {state}", failure_reason(e, store))
        with suppress(OSError, ClaimRefused):  # else it ends with this process
            store.release(run.run_id)


def _say_unrecorded(run: RunSpec, what: str, why: str) -> None:
    print(f"run {run.run_id}: could not record {what} in the results store ({why}); "
          "the next `bench run` tries it again", file=sys.stderr)
