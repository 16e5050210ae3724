"""The results index at scale: lookups by run and suite are indexed, `bench ls` reads every
run's final metrics in one query, a report reads only the rows it shows."""

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bench.report.suite_data import load_suite_data
from bench.store.runs import Store

CURVE = [{"step": 10 * k, "flops": 1e9 * k, "tokens": 64 * k, "loss": 5.0 - k / 10}
         | ({"val_nll": 4.0 - k / 10} if k % 2 == 0 else {}) for k in range(1, 9)]


class TracedStore(Store):
    """A Store whose connections record every statement they run."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.statements: list[str] = []

    def _connect(self) -> sqlite3.Connection:
        con = super()._connect()
        con.set_trace_callback(self.statements.append)
        return con


def add_runs(store: Store, suite: str, n: int, fail_every: int = 0) -> None:
    for i in range(n):
        run_id = f"{suite}-{i:03d}"
        store.begin(suite, f"v{i % 2}", i, run_id, {"seed": i}, {"started": f"t{i:03d}"})
        if fail_every and i % fail_every == 0:
            store.fail(run_id, "boom", "t")
        else:
            store.finish(run_id, {"acc": i / 100, "n": float(i)}, CURVE, {"ended": "t"},
                         {"pr:x": ([0.0, 1.0], [1.0, 0.5])})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TracedStore:
    store = TracedStore(tmp_path_factory.mktemp("scale") / "results")
    add_runs(store, "big", 30, fail_every=7)
    add_runs(store, "small", 3)
    return store


def test_ls_reads_all_final_metrics_in_a_constant_number_of_queries(store: TracedStore) -> None:
    store.statements.clear()
    runs = store.runs()
    selects = [s for s in store.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(runs) == 33 and len(selects) <= 4, selects


def test_bulk_metrics_match_each_runs_own(store: TracedStore) -> None:
    for suite in (None, "small"):
        runs = store.runs(suite)
        assert runs and all(suite is None or r["suite"] == suite for r in runs)
        for run in runs:
            assert run["metrics"] == store.final_metrics(run["run_id"])
    failed = [r for r in store.runs("big") if r["state"] == "failed"]
    assert failed and all(r["metrics"] == {} for r in failed)
    assert store.final_metrics("big-001") == {"acc": 0.01, "n": 1.0}


@pytest.mark.parametrize("query", [
    "SELECT metric, value FROM metrics WHERE run_id = 'x' AND step IS NULL",
    "DELETE FROM metrics WHERE run_id = 'x'",
    "DELETE FROM points WHERE run_id = 'x'",
    "SELECT * FROM runs WHERE suite = 'x'",
    "SELECT * FROM points WHERE suite = 'x'",
])
def test_lookups_by_run_and_suite_use_an_index(store: TracedStore, query: str) -> None:
    with closing(sqlite3.connect(store.index_path)) as con:
        plan = " ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + query))
    assert "USING" in plan and "INDEX" in plan, plan


def test_report_reads_only_the_curve_it_draws(store: TracedStore) -> None:
    full = load_suite_data(store.index_path, "big")
    some = load_suite_data(store.index_path, "big", curves=["curve.val_nll"])
    assert set(full.curves["metric"]) == {"curve.train_loss", "curve.val_nll"}
    assert set(some.curves["metric"]) == {"curve.val_nll"}
    assert len(some.curves) == 4 * 25  # 25 finished runs, validation every other row
    assert some.finals.equals(full.finals)
    assert len(some.finals) == 2 * 25 and len(some.runs) == 30
