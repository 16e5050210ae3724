"""A results folder from Python (a notebook, a script): tidy pandas frames of its runs, their
final metrics, training curves and per-example evaluation rows, and a suite's summary and
comparison frames, the very ones its report prints.

    from bench.results import open_results

    results = open_results("results")
    results.runs(state="finished")                # a row per run, as `bench ls --format csv`
    results.metrics("demo-lm")                    # run_id, variant, seed, metric, value
    results.curves("demo-lm", ["train_loss"])    # ... step, flops, tokens, value
    results.samples("demo-lm", "lambada")         # a row per run and example
    demo = results.suite("suites/demo/lm.yaml")
    demo.summary()                                # mean, interval, delta, p per variant, metric
    demo.table("paper")                           # any table `bench export` writes, as numbers

Every frame is read from the run folders through the store's index, which is brought up to
date when the folder is opened (and by `refresh`)."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config.suite import load_suite
from bench.errors import UserError
from bench.execution.listing import list_runs
from bench.report.spec import ReportSpec, spec_for
from bench.report.suite_data import SuiteData, load_suite_data
from bench.report.table_files import tidy
from bench.report.tables import ReportTable, chosen_table, report_tables
from bench.store.folder import Unreadable, read_samples, sample_names
from bench.store.queries import FINISHED, suite_rows
from bench.store.runs import Store
from bench.util.paths import RESULTS_HINT, check_folder

# The columns that say which run a metric, curve or sample row belongs to.
RUN_KEYS = ["run_id", "variant", "seed"]


def open_results(path: str | Path = "results") -> "Results":
    """The results folder at `path` (what `bench run --results` wrote), its index brought up
    to date from the run folders."""
    return Results(Store(check_folder(Path(path), RESULTS_HINT)))


@dataclass(frozen=True)
class Results:
    """A results folder: every suite's runs in it."""

    store: Store

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Import what the run folders recorded since (runs that went on training meanwhile)."""
        if self.store.root.is_dir():
            self.store.sync()

    def suites(self) -> list[str]:
        """The suites with runs here."""
        return sorted({run["suite"] for run in self.store.runs()})

    def runs(self, suite: str | None = None, state: str | Sequence[str] | None = None,
             metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """A row per run, newest first: id, suite, variant, seed, budget (unit and amount),
        the state every command shows, its detail, times, and final metrics (`metrics`: names
        or patterns such as `lambada.*`; the evaluators' and validation losses by default)."""
        states = [state] if isinstance(state, str) else None if state is None else list(state)
        return list_runs(self.store, suite, states,
                         None if metrics is None else list(metrics)).runs

    def metrics(self, suite: str) -> pd.DataFrame:
        """Every final metric of the suite's finished runs, a row each: run_id, variant, seed,
        metric, value (a metric recorded again: its last value)."""
        rows = self._finished_rows(suite, curves=[])
        finals = rows[rows["step"].isna()].drop_duplicates(["run_id", "metric"], keep="last")
        return finals[[*RUN_KEYS, "metric", "value"]].reset_index(drop=True)

    def curves(self, suite: str, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """The training curves of the suite's finished runs (`metrics`: the curve's columns,
        such as `train_loss` or `val_nll`; all when None), a row per run, step and metric:
        run_id, variant, seed, metric, step, flops, tokens, value."""
        names = None if metrics is None else [f"curve.{m}" for m in metrics]
        rows = self._finished_rows(suite, curves=names)
        curve = rows[rows["step"].notna()].copy()
        curve["metric"] = curve["metric"].str.removeprefix("curve.")
        curve["step"] = curve["step"].astype("int64")
        return curve[[*RUN_KEYS, "metric", "step", "flops", "tokens", "value"]].reset_index(
            drop=True)

    def samples(self, suite: str, evaluation: str) -> pd.DataFrame:
        """The per-example rows an evaluation wrote for each finished run of the suite
        (`samples_<evaluation>.jsonl`: `lambada`, `glue_sst2`, `wider_single`, ...), a row per
        run and example, led by run_id, variant and seed; runs without the file are left out."""
        runs = self.runs(suite, FINISHED, metrics=[])
        frames = []
        for run in runs.itertuples():
            folder = self.store.run_dir(suite, run.run_id)
            if evaluation not in sample_names(folder):
                continue
            try:
                rows = read_samples(folder, evaluation)
            except Unreadable as err:
                raise UserError(f"{folder}: {err}") from None
            frame = pd.DataFrame(rows)
            frame.insert(0, "seed", run.seed)
            frame.insert(0, "variant", run.variant)
            frame.insert(0, "run_id", run.run_id)
            frames.append(frame)
        if not frames:
            names = sorted({n for run in runs.itertuples()
                            for n in sample_names(self.store.run_dir(suite, run.run_id))})
            raise UserError(f"suite {suite!r}: no finished run wrote samples_{evaluation}.jsonl"
                            f" in {self.store.root}; evaluations with samples: "
                            f"{', '.join(names) or 'none'}")
        return pd.concat(frames, ignore_index=True)

    def suite(self, path: str | Path, overrides: Sequence[str] = ()) -> "SuiteResults":
        """The suite file at `path` (with `bench`'s `-o` overrides) read against this folder:
        its report's frames."""
        suite = load_suite(str(path), overrides=list(overrides))
        spec = spec_for(suite, self.store.root)
        spec.check()
        data = load_suite_data(self.store.index_path, spec.suite, curves=[spec.curve])
        assert data is not None  # required: a suite without finished runs is an error
        return SuiteResults(spec, data)

    def _finished_rows(self, suite: str, curves: Sequence[str] | None) -> pd.DataFrame:
        if not self.store.index_path.is_file():
            raise UserError(f"{self.store.index_path}: results index not found")
        rows = suite_rows(self.store.index_path, suite, curves)
        return rows.metrics.drop(columns=["variant", "seed"]).merge(
            rows.runs[RUN_KEYS], on="run_id").sort_values("row_order")


@dataclass(frozen=True)
class SuiteResults:
    """One suite's runs as its report reads them: `spec` (baseline, metrics, directions, the
    paper's numbers), `data` (the index's rows, each variant at its largest budget)."""

    spec: ReportSpec
    data: SuiteData

    def tables(self) -> dict[str, ReportTable]:
        """Every table of the report by name, each with its numbers, printed cells, caption."""
        return report_tables(self.spec, self.data)

    def table(self, name: str = "main") -> pd.DataFrame:
        """The numbers of one table (main, paper, per-seed, compute, efficiency) as a flat
        frame: what `bench export --format csv` writes."""
        return tidy(chosen_table(self.tables(), name, self.spec).numbers)

    def summary(self) -> pd.DataFrame:
        """A row per variant and metric: seeds, mean, 95% interval, the evaluation's stderr,
        the difference to the baseline with its interval, test and p, the paper's number."""
        return self.table("main")

    def comparison(self) -> pd.DataFrame:
        """The suite's paper table (`report.table`) as numbers: a row per variant and metric."""
        return self.table("paper")
