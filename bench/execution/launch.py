"""A suite's planned runs started, as `bench run` starts them: inline, one after another in
this process (`run_inline`), or each as a job on this machine or SLURM (`submit`), into a
results store checked first (`checked_store`); the command's exit code names the failed runs.

A finished run is skipped, a run another live process holds is left to it (or waited for),
a run an earlier version recorded is found under the id it gave it, and a run whose config and
seed already ran on other input contents is refused unless asked (`input_conflicts`): resuming
it would mix data it was not trained on (`bench.execution.recorded`).
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config.suite import Suite
from bench.contract import Family, RunSpec
from bench.errors import ClaimRefused, UserError
from bench.execution.preflight import preflight
from bench.execution.recorded import input_conflicts, known_runs, with_aliases
from bench.store.runs import Store
from bench.training.distributed import from_main, join, leave, pick_device, world
from bench.util.paths import (
    RESULTS_HINT,
    cache_home,
    check_folder,
    nearest_existing,
    try_create_in,
)

if TYPE_CHECKING:
    import torch

# `--wait`: seconds between looks at runs that other processes hold.
WAIT_POLL_S = 5.0


@dataclass(frozen=True)
class RunOptions:
    """How the runs are started (`bench run`'s options)."""

    results: Path  # the results folder (checked by `checked_store`)
    executor: str = "inline"  # inline, local or slurm
    device: str = "auto"
    progress: bool = True
    wait: bool = False  # inline: wait for runs that other processes hold
    restart_corrupt: bool = False
    rerun_changed_inputs: bool = False
    max_parallel: int | None = None  # jobs running at once
    detach: bool = False  # submit and return
    resource: list[str] = field(default_factory=list)  # KEY=VALUE overrides of `resources:`
    status_hint: str = "bench status SUITE"  # the command that shows detached jobs


def check_options(options: RunOptions, nproc: int) -> None:
    """Options that only a cluster executor takes, and what it takes instead of --nproc."""
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: expected at least 1 process")
    if options.executor == "inline":
        given = [name for name, value in (("--max-parallel", options.max_parallel),
                                          ("--detach", options.detach),
                                          ("--resource", options.resource)) if value]
        if given:
            raise UserError(f"{given[0]}: only with --executor local or slurm")
        return
    if nproc != 1:
        raise UserError(f"--nproc with --executor {options.executor}: a job's processes come "
                        "from its resources (gpus_per_node, tasks_per_node, nodes)")
    if options.max_parallel is not None and options.max_parallel < 1:
        raise UserError(f"--max-parallel {options.max_parallel}: expected at least 1")


def check_split(suite: Suite, runs: list[RunSpec], processes: int) -> None:
    """A batch that does not split over `processes` fails here, not inside every process."""
    if processes > 1:
        for name in {r.variant.name for r in runs}:
            suite.family.step_costs(suite.variants[name].config, processes)


def run_inline(suite: Suite, runs: list[RunSpec], options: RunOptions) -> int:
    """Every planned run in turn, in this process (one of a torchrun job's, if started so):
    skip finished ones, leave held ones (or wait for them), report failures."""
    preflight(suite, runs)
    device = join(pick_device(options.device))
    try:
        store, runs = checked_store(suite.name, runs, options)
        failures: list[tuple[str, str]] = []
        held: list[tuple[str, RunSpec]] = []
        for i, r in enumerate(runs, 1):
            label = f"[{i}/{len(runs)}] {r.label} ({r.run_id})"
            holder = _run_unless_held(label, r, suite.family, store, device, options, failures)
            if holder is not None:
                print(f"{label}: {holder}, {'waiting for it' if options.wait else 'skipped'}",
                      flush=True)
                held.append((label, r))
        while held and options.wait:
            time.sleep(WAIT_POLL_S)
            held = [(label, r) for label, r in held if _run_unless_held(
                label, r, suite.family, store, device, options, failures)]
        if held:
            print(f"{len(held)} of {len(runs)} runs left to the processes running them "
                  "(bench run --wait waits for them)")
        return failure_code(failures, len(runs))
    finally:
        leave()


def _run_unless_held(label: str, r: RunSpec, family: Family, store: Store,
                     device: "torch.device", options: RunOptions,
                     failures: list[tuple[str, str]]) -> str | None:
    """Run `r` (a finished run is skipped, a failure added to `failures`); when another live
    process holds it, leave it to that process and return the holder in words."""
    from bench.execution.runner import execute_run

    refused = from_main(store.claim_refusal(r.run_id) if world().main else None)
    if refused is None:
        print(f"{label}: running on {device}", flush=True)
        try:
            reason = execute_run(r, family, store, device, cache_home(),
                                 progress=options.progress,
                                 restart_corrupt=options.restart_corrupt)
        except ClaimRefused as e:  # another process claimed it since the check above
            refused = e
    if refused is not None:
        if refused.state != "finished":
            return refused.status
        print(f"{label}: finished earlier, skipped")
    elif reason is None:
        print(f"{label}: finished -> {store.run_dir(r.suite, r.run_id)}")
    else:
        print(f"{label}: FAILED: {reason} (log: {store.run_dir(r.suite, r.run_id) / 'run.log'})")
        failures.append((label, reason))
    return None


def submit(suite: Suite, runs: list[RunSpec], options: RunOptions) -> int:
    """`--executor local|slurm`: every pending run as a job; follow them to their ends unless
    `detach`."""
    from bench.execution.cluster import RunJob, Submitter, check_resources
    from bench.training.checkpoints import branch_checkpoint

    resources = {name: v.resources.override(options.resource)
                 for name, v in suite.variants.items()}
    used = {name: resources[name] for name in sorted({r.variant.name for r in runs})}
    for name, (fit, lowered) in check_resources(options.executor, used).items():
        resources[name] = fit  # what cannot run fails here, not in a job
        for line in lowered:
            print(f"variant {name}: {line}", flush=True)
        if fit.processes > 1:
            suite.family.step_costs(suite.variants[name].config, fit.processes)
    preflight(suite, runs)
    store, runs = checked_store(suite.name, runs, options)
    results, cache = str(store.root.resolve()), str(cache_home().resolve())
    limit = options.max_parallel or (len(runs) if options.executor == "slurm" else 1)

    def job_of(run: RunSpec) -> RunJob:
        threads = resources[run.variant.name].cpus_per_task
        return RunJob(run, results, options.device, cache, options.restart_corrupt, threads)

    def branch_of(run: RunSpec) -> Path | None:  # in the source's folder, a sibling's
        return None if run.branch_source is None else branch_checkpoint(
            run, suite.family.stages(run.config), store.run_dir(suite.name, run.branch_source))

    submitter = Submitter(options.executor, store, suite.name, limit, job_of,
                          lambda run: resources[run.variant.name], branch_of,
                          lambda line: print(line, flush=True))
    submitter.start(runs)
    if options.detach:
        held, left = len(submitter.held), len(submitter.waiting) - len(submitter.held)
        waits = [f"{left} for a place"] * bool(left) + [
            f"{held} for their longest rung's branch checkpoint"] * bool(held)
        print(f"submitted; {options.status_hint} shows how the runs go"
              + (f" (runs wait, {' and '.join(waits)}: bench run submits them)"
                 if waits else ""))
        return 0
    return failure_code(submitter.wait(), len(runs))


def failure_code(failures: list[tuple[str, str]], n_runs: int) -> int:
    """The exit code of `bench run`: 1 naming each failed run, 0 when none failed."""
    if not failures:
        return 0
    print(f"\n{len(failures)} of {n_runs} runs failed:", file=sys.stderr)
    for label, reason in failures:
        print(f"  {label}: {reason}", file=sys.stderr)
    return 1


def checked_store(suite: str, runs: list[RunSpec], options: RunOptions
                  ) -> tuple[Store, list[RunSpec]]:
    """The results store of `suite`'s `runs`, once no planned run would resume or reuse a run
    on other inputs (unless `rerun_changed_inputs`), and the runs with the ids an earlier
    version recorded some of them under (`bench.execution.recorded`)."""
    store = Store(check_folder(options.results, RESULTS_HINT))
    writable = nearest_existing(store.root)
    try:
        try_create_in(writable)
    except OSError:
        raise UserError(f"{writable}: not writable, and bench run records its runs in the "
                        f"results folder {store.root}") from None
    check_folder(store.root / suite, f"; the folder of suite {suite}'s runs")
    known = known_runs(store, suite)
    conflicts = input_conflicts(runs, known)
    warn_skipped(store.skipped)
    if conflicts and not options.rerun_changed_inputs:
        raise UserError("inputs changed since these runs started, so resuming or reusing them "
                        "would mix data:\n  " + "\n  ".join(conflicts) + "\nrestore the "
                        "files, or pass --rerun-changed-inputs to start new runs (the old runs "
                        "stay in the store)")
    for line in conflicts:
        print(f"inputs changed: {line}: starting it")
    found = with_aliases(runs, known)
    aliased = sum(a.run_id != b.run_id for a, b in zip(runs, found, strict=True))
    if aliased:
        print(f"{aliased} of {len(runs)} runs found under the ids an earlier version of bench "
              "gave them; they keep those ids")
    return store, found


def warn_skipped(skipped: list[str]) -> None:
    """The run folders a store could not read, named as warnings."""
    for line in skipped:
        print(f"warning: {line}; skipped", file=sys.stderr)
