"""A suite's Optuna sweep started, as `bench sweep` starts it (`run_sweep`): the study opened,
its trials run by this process, by worker processes of the same command on this machine
(`spawn_workers`) or by worker jobs (local or SLURM), and the study's summary printed last.

A worker is the same command again with `--worker-index K` (its sampler's seed offset), the
storage, results folder and trial count spelt out, so that it joins this study wherever it runs.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from bench.config.overrides import as_arguments
from bench.config.plan import run_spec, variant_inputs
from bench.config.suite import Suite, load_suite, sweep_variant
from bench.errors import UserError
from bench.execution.preflight import preflight
from bench.execution.sweep import (
    Worker,
    default_storage,
    load_study,
    open_storage,
    study_name,
    study_summary,
)
from bench.resources import Resources
from bench.store.runs import Store
from bench.training.distributed import pick_device
from bench.util.paths import RESULTS_HINT, cache_home, check_folder


@dataclass(frozen=True)
class SweepOptions:
    """How the sweep is run (`bench sweep`'s options)."""

    results: Path  # the results folder (checked before the study is opened)
    storage: str | None = None  # a journal file or database URL (default: a journal in results)
    n_trials: int | None = None  # complete or pruned trials to reach (default: the suite's)
    workers: int = 1
    heartbeat: int = 30  # database storages: seconds between a running trial's heartbeats
    overrides: list[str] = field(default_factory=list)  # -o KEY=VALUE, applied to the suite
    device: str = "auto"
    progress: bool = True
    executor: str = "inline"  # inline: workers are processes; local or slurm: jobs
    resource: list[str] = field(default_factory=list)  # KEY=VALUE: the jobs' `resources:`
    worker_index: int | None = None  # set in a worker that a sweep started


def run_sweep(suite_file: str, options: SweepOptions, entry: Callable[[list[str]], int]) -> int:
    """Run the sweep of the suite in `suite_file` until its study has enough trials; worker jobs
    call `entry` (the command line's) with their arguments. 0 when every worker succeeded."""
    suite = load_suite(suite_file, overrides=options.overrides)
    if suite.head.sweep is None:
        raise UserError(f"{suite_file}: no 'sweep:' block (search space, objective, trials)")
    if options.workers < 1:
        raise UserError(f"--workers {options.workers}: expected at least 1")
    resources = _worker_resources(suite, options)
    if options.worker_index is None:  # missing data stops the sweep before its study opens
        variant = sweep_variant(suite)
        inputs = variant_inputs(suite.family, variant, cache_home())
        preflight(suite, [run_spec(suite.name, variant, suite.head.seeds[0], inputs)])
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported below, once
    results = check_folder(options.results, RESULTS_HINT)
    url = options.storage or default_storage(results, study_name(suite))
    n_trials = options.n_trials or suite.head.sweep.trials
    study = load_study(suite, open_storage(url, options.heartbeat), options.worker_index or 0)
    if (options.workers > 1 or options.executor != "inline") and options.worker_index is None:
        if url.startswith("sqlite"):
            print("warning: SQLite with parallel workers is what Optuna's FAQ advises against; "
                  "the default journal file or a PostgreSQL URL is safe", file=sys.stderr)
        print(f"study {study.study_name} in {url}: {options.workers} workers, {n_trials} trials")
        if "://" not in url:  # a journal file: jobs may start in another folder
            url = str(Path(url).resolve())
        argv = ["sweep", str(Path(suite_file).resolve()), "--storage", url, "--n-trials",
                str(n_trials), "--results", str(results.resolve()), "--device", options.device,
                "--heartbeat", str(options.heartbeat), "--no-progress",
                *as_arguments(options.overrides)]
        if resources is None:
            code = spawn_workers(argv, options.workers)
        else:
            from bench.execution.cluster import run_workers

            code = run_workers(options.executor, entry, argv, options.workers,
                               results.resolve() / ".jobs" / "sweeps" / study.study_name,
                               resources, study.study_name, lambda line: print(line, flush=True))
    else:
        prefix = "" if options.worker_index is None else f"[worker {options.worker_index}] "
        Worker(suite, study, Store(results), pick_device(options.device), cache_home(),
               progress=options.progress,
               report=lambda line: print(prefix + line, flush=True)).run(n_trials)
        code = 0
    if options.worker_index is None:
        print(study_summary(study))  # the storage is read afresh: the workers' trials are in it
    return code


def _worker_resources(suite: Suite, options: SweepOptions) -> Resources | None:
    """The worker jobs' resources (None for workers of this command), checked before the study
    is opened, so that a bad --resource writes nothing."""
    if options.executor == "inline":
        if options.resource:
            raise UserError("--resource: only with --executor local or slurm")
        return None
    from bench.execution.cluster import check_resources

    block = sweep_variant(suite).resources.override(options.resource)
    ((resources, lowered),) = check_resources(options.executor, {"workers": block}).values()
    for line in lowered:
        print(f"sweep workers: {line}", flush=True)
    return resources


def spawn_workers(argv: list[str], n: int) -> int:
    """Run `n` worker processes of the same `bench sweep` command; 0 when all succeed.

    A worker killed from outside does not stop the others: they take over its trial. The CPU
    cores are shared out (OMP_NUM_THREADS) so that workers do not oversubscribe them.
    """
    threads = str(max(1, (os.cpu_count() or 1) // n))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.cli", *argv,
                               "--worker-index", str(k)], env=env) for k in range(n)]
    codes = [p.wait() for p in procs]
    return max(codes) if all(c >= 0 for c in codes) else 1
