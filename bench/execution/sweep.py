"""Optuna sweeps over a suite: every trial is an ordinary, recorded, resumable run.

A trial is the suite's swept variant with the sampled fields set (`derive_variant`), run by the
same `execute_run` as `bench run`, into the results store under the suite `<study>` with variant
name `trial-NNNN`; the trial keeps the run id (user attribute `run_id`), the run keeps the trial
number in its variant name. The pruner hears the validation metrics the training loop reports.

Storage. The default is embedded: an Optuna journal file under `results/sweeps/`, which Optuna
recommends for several processes on one machine (its FAQ warns against SQLite with parallel
workers); a `postgresql://` URL (any SQLAlchemy URL) lets workers on many machines join one study.

Workers. Each worker loops: reap trials of dead workers, count, run one trial. The study stops at
`trials` complete-or-pruned trials. A trial whose worker died is failed and its parameters are
queued again (RDB storages: Optuna's heartbeat and `RetryHeartbeatStaleTrialCallback`; the journal,
which has no heartbeat: the worker's host and pid, checked by the workers on that host). A retried
trial has the same config and seed, so the same run id: its run resumes from its checkpoints. When
workers start trials at the same moment, the trials beyond `trials` (by trial number) are not
run: they end as failed with the user attribute `surplus`, so the study never overshoots.
Worker k samples with seed + k, so parallel TPE start-ups do not propose identical points.
"""

import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal
import sqlalchemy.exc
from optuna.trial import FrozenTrial, Trial, TrialState

from bench.config.plan import run_spec, variant_inputs
from bench.config.suite import Suite, derive_variant, sweep_variant
from bench.config.sweep_config import SweepConfig
from bench.errors import Pruned, RunFailed, UserError
from bench.store.runs import Store

MAX_RETRIES = 3  # a trial whose worker died is run again at most this many times
SCHEMA_ATTEMPTS = 5  # opening a new database that other workers create at the same time
POLL_S = 2.0  # how often an idle worker looks whether in-flight trials finished or died
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class Surplus(Exception):
    """A trial asked for after the study already had all its trials in flight."""


def study_name(suite: Suite) -> str:
    assert suite.head.sweep is not None
    return suite.head.sweep.study or f"{suite.name}.sweep"


def default_storage(results: Path, study: str) -> str:
    """The embedded storage: a journal file under the results folder."""
    return str(results / "sweeps" / f"{study}.journal")


def open_storage(url: str, heartbeat_s: int) -> optuna.storages.BaseStorage:
    """An RDB storage for a URL (with heartbeat and retries: a running trial silent for three
    heartbeats is stale), else a journal file at a path."""
    if "://" in url:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                return _rdb_storage(url, heartbeat_s)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
                # Workers opening a new database together all create Optuna's tables; the
                # losers' CREATEs collide with the winner's ("already exists") and, once the
                # tables stand, open them.
                if attempt + 1 == SCHEMA_ATTEMPTS:
                    raise _unopenable(url, err) from None
                time.sleep(random.uniform(0.1, 0.5))
            except Exception as err:  # SQLAlchemy and drivers raise many kinds
                raise _unopenable(url, err) from None
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(
        str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
    return optuna.storages.journal.JournalStorage(backend)


def _rdb_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
            heartbeat_stale_trial_callback=(
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)))


def _unopenable(url: str, err: Exception) -> UserError:
    return UserError(f"--storage {url}: cannot open the study database ({err})")


def _sampler(cfg: SweepConfig, worker: int) -> optuna.samplers.BaseSampler:
    seed = cfg.sampler.seed + worker
    if cfg.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.sampler.n_startup_trials)


def _pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def load_study(suite: Suite, storage: optuna.storages.BaseStorage, worker: int = 0
               ) -> optuna.Study:
    """The suite's study, created on first use; its direction must match the suite's."""
    cfg = suite.head.sweep
    assert cfg is not None
    study = optuna.create_study(study_name=study_name(suite), storage=storage,
                                direction=cfg.objective.direction, load_if_exists=True,
                                sampler=_sampler(cfg, worker), pruner=_pruner(cfg))
    if study.direction.name.lower() != cfg.objective.direction:
        raise UserError(f"study {study.study_name!r} exists with direction "
                        f"{study.direction.name.lower()}; the suite asks {cfg.objective.direction}")
    return study


def suggest(trial: Trial, cfg: SweepConfig) -> dict[str, Any]:
    """One value per searched field, drawn by the study's sampler."""
    params: dict[str, Any] = {}
    for name, p in cfg.space.items():
        if p.type == "float":
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            params[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
        else:
            params[name] = trial.suggest_categorical(name, p.choices)
    return params


@dataclass
class Worker:
    """One process's share of a sweep: it runs trials until the study has enough."""

    suite: Suite
    study: optuna.Study
    store: Store
    device: Any
    cache_dir: Path
    progress: bool = False
    report: Callable[[str], None] = print

    @property
    def cfg(self) -> SweepConfig:
        assert self.suite.head.sweep is not None
        return self.suite.head.sweep

    def run(self, n_trials: int) -> None:
        failures = 0
        while True:
            self._reap_dead_workers()
            trials = self.study.get_trials(deepcopy=False)
            done = sum(t.state in DONE for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if done >= n_trials:
                return
            if done + running >= n_trials and not waiting:  # in flight elsewhere; may die
                time.sleep(POLL_S)
                continue
            before = len(trials)
            try:
                self.study.optimize(lambda t: self._objective(t, n_trials), n_trials=1,
                                    catch=(RunFailed, Surplus), gc_after_trial=False)
            except optuna.exceptions.UpdateFinishedTrialError as err:
                # Another worker judged this trial stale (its heartbeats came late) and
                # requeued it; the retry resumes the same run, so nothing is lost.
                self.report(f"a trial was taken over by another worker: {err}")
            last = self._own_last(before)
            if last is not None and last.state == TrialState.FAIL \
                    and not last.user_attrs.get("surplus"):
                failures += 1
                if failures >= max(3, n_trials):
                    raise UserError(f"{failures} trials failed in this worker; see their "
                                    "run logs (bench ls, results/<study>/<run-id>/run.log)")

    def _own_last(self, before: int) -> FrozenTrial | None:
        mine = [t for t in self.study.get_trials(deepcopy=False)[before:]
                if t.user_attrs.get("worker") == _worker_id()]
        return mine[-1] if mine else None

    def _objective(self, trial: Trial, n_trials: int) -> float:
        trial.set_user_attr("worker", _worker_id())
        live = sorted(t.number for t in self.study.get_trials(deepcopy=False)
                      if t.state in (*DONE, TrialState.RUNNING, TrialState.WAITING))
        if trial.number in live and live.index(trial.number) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the study already has {n_trials} trials")
        params = suggest(trial, self.cfg)
        base = sweep_variant(self.suite)
        try:
            variant = derive_variant(self.suite.family, base, f"trial-{trial.number:04d}",
                                     params)
        except ValueError as err:
            trial.set_user_attr("reason", str(err))
            raise RunFailed(f"trial {trial.number}: {params} is not a valid config: {err}") \
                from None
        seed = self.cfg.seed if self.cfg.seed is not None else self.suite.head.seeds[0]
        inputs = variant_inputs(self.suite.family, variant, self.cache_dir)
        run = replace(run_spec(self.study.study_name, variant, seed, inputs),
                      overrides=self.suite.overrides, tracking=tuple(self.suite.head.tracking))
        trial.set_user_attr("run_id", run.run_id)
        self.report(f"trial {trial.number}: {params} -> run {run.run_id}")
        if self.store.state(run.run_id) != "finished":
            from bench.execution.runner import execute_run  # torch: only where a trial really runs

            try:
                reason = execute_run(run, self.suite.family, self.store, self.device,
                                     self.cache_dir, self.progress, self._pruning(trial))
            except Pruned as err:
                self.report(f"trial {trial.number}: pruned ({err})")
                raise optuna.TrialPruned(str(err)) from None
            if reason is not None:
                trial.set_user_attr("reason", reason)
                raise RunFailed(f"trial {trial.number}: run {run.run_id} failed: {reason}")
        metrics = self.store.final_metrics(run.run_id)
        metric = self.cfg.objective.metric
        if metric not in metrics:
            raise RunFailed(f"trial {trial.number}: run {run.run_id} recorded no {metric!r} "
                            f"(it has {', '.join(sorted(metrics))})")
        self.report(f"trial {trial.number}: {metric} = {metrics[metric]:.6g}")
        return metrics[metric]

    def _pruning(self, trial: Trial) -> Callable[[float, dict[str, float]], None]:
        """Reports the pruner's metric at each validation; raises Pruned when told to stop."""
        p = self.cfg.pruner
        key = p.metric if p.metric.startswith("val_") else f"val_{p.metric}"
        sign = 1.0 if p.direction == self.cfg.objective.direction else -1.0

        def hear(progress: float, metrics: dict[str, float]) -> None:
            if key not in metrics:
                raise RunFailed(f"pruner metric {key!r} is not among the validation metrics "
                                f"({', '.join(sorted(metrics))}); set sweep.pruner.metric")
            step = round(100 * progress)
            trial.report(sign * metrics[key], step)
            # At a stage's end its compute is spent: stopping there would save nothing.
            if progress % 1 and trial.should_prune():
                raise Pruned(f"{key} = {metrics[key]:.6g} at {step}% of the budget")

        return hear

    def _reap_dead_workers(self) -> None:
        """Fail and requeue running trials of dead workers: RDB storages by heartbeat; the
        journal by checking, on this host, whether the worker's process still exists."""
        storage = self.study._storage
        if isinstance(storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(self.study)
            return
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if not worker or worker["host"] != host or _alive(worker["pid"]):
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another worker reaped it first
            retries = t.user_attrs.get("retries", 0)
            self.report(f"trial {t.number}: its worker (pid {worker['pid']}) died; "
                        + ("queued again" if retries < MAX_RETRIES else "not retried again"))
            if retries < MAX_RETRIES:
                self.study.enqueue_trial(t.params, user_attrs={
                    "retry_of": t.user_attrs.get("retry_of", t.number), "retries": retries + 1})


def _worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def study_summary(study: optuna.Study) -> str:
    """Counts by state and the best trial, for the command's last lines."""
    trials = study.get_trials(deepcopy=False)
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    counts["fail"] -= surplus
    shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [f"study {study.study_name}: {shown}" + (f", {surplus} surplus (not run)"
                                                     if surplus else "")]
    if counts["complete"]:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, value {best.value:.6g}, params {best.params}, "
                     f"run {best.user_attrs.get('run_id')}")
    return "\n".join(lines)
