"""`bench index --rebuild`: the index regenerated from run folders alone, row for row; a damaged
index named with its remedy wherever it is opened."""

import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.cli import main
from bench.errors import UserError
from bench.execution.runner import RunFolderContext, _record_success
from bench.report.suite_data import load_suite_data
from bench.store.index import rebuild_index
from bench.store.queries import study_runs
from bench.store.runs import Store
from bench.training.train import StageResult

SUITE = "rebuild"
PROV = {"git_commit": "abc", "device": "cpu", "device_name": "x86_64", "host": "h",
        "started": "2024-01-01T00:00:00",
        "packages": {"torch": "2"}, "threads": 4}


def _stage(seed: int) -> StageResult:
    curve = [{"stage": "pretrain", "step": 10 * k, "tokens": 640 * k, "flops": 1.5e9 * k,
              "loss": 5.0 - 0.1 * k + seed / 7, "lr": 1e-3, "wall": 0.25 * k}
             | ({"val_nll": 4.5 - 0.1 * k, "val_acc": 0.1 * k} if k % 2 == 0 else {})
             for k in range(1, 7)]
    return StageResult("pretrain", steps=60, flops=9e9, items=3840, seconds=2.5,
                       final_loss=4.4, curve=curve)


def finish_run(store: Store, path: Path, run_id: str, seed: int) -> None:
    """Record success exactly as the runner does: the folder's files, then the index."""
    ctx = RunFolderContext(SimpleNamespace(run_id=run_id), path, torch.device("cpu"),
                     logging.getLogger("test"), {}, path, stages=[_stage(seed)])
    ctx.record({"lambada.acc": 0.2 + seed / 100, "lambada.acc_stderr": 0.01})
    ctx.record_curve("pr:easy", [0.1, 0.5, 0.9], [1.0, 0.8, float("nan")])
    ctx.provenance["weights"] = "random"
    _record_success(SimpleNamespace(item_unit="tokens"), store, ctx, PROV)


def build_store(root: Path) -> Store:
    """Finished, failed, pruned and running runs over two suites, through the Store API."""
    store = Store(root)
    for i, (suite, variant, seed, end) in enumerate([
            (SUITE, "softmax", 0, "finished"), (SUITE, "softmax", 1, "finished"),
            (SUITE, "cwt", 0, "failed"), (SUITE, "cwt", 1, "running"),
            ("other", "cwt", 0, "finished"), ("other", "cwt", 1, "pruned")]):
        run_id = f"run{i:02d}"
        config = {"family": "lm", "config": {"lr": 1e-3, "variant": variant}, "seed": seed}
        path = store.begin(suite, variant, seed, run_id, config, PROV | {"run": i})
        if end == "finished":
            finish_run(store, path, run_id, seed)
        elif end != "running":
            store.fail(run_id, f"{end}: at step 3", "2024-01-02T00:00:00", state=end)
    return store


def table_rows(index: Path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted (the row order of a table carries no meaning)."""
    with closing(sqlite3.connect(index)) as con:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr)
                for n in names}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return build_store(tmp_path / "results")


def test_rebuild_gives_the_incremental_index_row_for_row(store: Store) -> None:
    before = table_rows(store.index_path)
    store.index_path.unlink()
    rebuilt = rebuild_index(store.root)
    assert (rebuilt.runs, rebuilt.skipped) == (6, [])
    after = table_rows(store.index_path)
    assert set(after) == {"runs", "metrics", "points", "imported"}
    for table in after:
        assert after[table] == before[table], table
    assert len(after["metrics"]) > 20 and len(after["points"]) == 6  # 3 finished x 2


def test_damaged_index_is_named_with_its_remedy(store: Store, capsys) -> None:
    store.index_path.write_bytes(b"not an index at all" * 50)
    with pytest.raises(UserError, match=r"index.sqlite: not a valid index \(file is not a "
                       r"database\); rebuild it with bench index --rebuild"):
        store.runs()
    assert store.state("run00") == "finished"  # the folders, the record, are intact
    with pytest.raises(UserError, match="rebuild it with bench index --rebuild"):
        load_suite_data(store.index_path, SUITE)
    with pytest.raises(UserError, match=r"not a valid index .*rebuild it with bench index"):
        study_runs(store.index_path, SUITE)  # a sweep report's read of its trials' runs
    assert main(["ls", "--results", str(store.root)]) == 2
    assert "not a valid index" in capsys.readouterr().err


def test_index_damaged_past_its_first_page_is_named_too(store: Store) -> None:
    blob = bytearray(store.index_path.read_bytes())
    page = int.from_bytes(blob[16:18], "big")
    blob[2 * page:] = b"\xff" * (len(blob) - 2 * page)
    store.index_path.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="not a valid index"):
        store.runs()


def test_bench_index_rebuild_replaces_a_damaged_index(store: Store, capsys) -> None:
    before = table_rows(store.index_path)
    store.index_path.write_bytes(b"garbage" * 1000)
    assert main(["index", "--rebuild", "--results", str(store.root)]) == 0
    assert "from 6 run folders" in capsys.readouterr().out
    assert table_rows(store.index_path) == before
    assert {r["run_id"]: r["state"] for r in store.runs()}["run03"] == "running"


def test_unreadable_folders_are_named_and_skipped(store: Store, capsys) -> None:
    (store.root / SUITE / "run00" / "metrics.json").write_text("{broken")
    (store.root / SUITE / "run01" / "curve.csv").write_text("step,flops,tokens,loss\n1,2,x,4\n")
    (store.root / SUITE / "empty").mkdir()
    assert main(["index", "--rebuild", "--results", str(store.root)]) == 0
    err = capsys.readouterr().err
    assert "run00: metrics.json: Expecting property name" in err
    assert "run01: curve.csv:2: column 'tokens': expected a number" in err
    assert "empty: config.json: missing; skipped" in err
    assert {r["run_id"] for r in store.runs()} == {"run02", "run03", "run04", "run05"}


def test_failed_rebuild_leaves_the_old_index(store: Store, monkeypatch) -> None:
    before = store.index_path.read_bytes()

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("bench.store.index._index_folder", broken)
    with pytest.raises(OSError):
        rebuild_index(store.root)
    assert store.index_path.read_bytes() == before
    assert [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")] == []


def test_folders_from_older_versions_are_inferred(store: Store) -> None:
    for run in ("run00", "run02"):
        (store.root / SUITE / run / "state.json").unlink()
    rebuild_index(store.root)
    runs = {r["run_id"]: r for r in store.runs(SUITE)}
    assert runs["run00"]["state"] == "finished" and runs["run00"]["seed"] == 0
    assert runs["run00"]["metrics"]["lambada.acc"] == pytest.approx(0.2)
    assert runs["run02"]["state"] == "failed" and runs["run02"]["metrics"] == {}
    config = json.loads((store.root / SUITE / "run00" / "config.json").read_text())
    assert runs["run00"]["variant"].startswith("config-") and config["seed"] == 0
