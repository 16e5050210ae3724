"""Watching a run while it trains: the run folder's live curve and progress, `bench status` with
step, ETA, loss and validation (`--json`, `--watch`), the progress line with total and ETA."""

import io
import json
import logging
import time
from pathlib import Path

import pytest
from support.store_suite import write_suite
from test_checkpoints import STEPS, Interrupted, timeless, train
from test_cluster import bench, finish, wait_for

from bench.contract import StageResult
from bench.execution.live import LiveRun
from bench.execution.queue import Queued
from bench.store.folder import (
    LIVE_CURVE,
    Unreadable,
    read_curve,
    read_live_curve,
    read_metrics,
    read_progress,
)
from bench.util.progress import LineProgress


class Live(LiveRun):
    """The run folder's live files, and what curve.jsonl held where the stage started."""

    at_start: list[int] | None = None

    def started(self, result: StageResult) -> None:
        super().started(result)
        self.at_start = [r["step"] for r in read_live_curve(self.folder)]


def live_train(folder: Path, stop_at: int | None = None) -> tuple[StageResult, Live]:
    """The toy stage of test_checkpoints (checkpoints every 4 of 12 steps, validations every 3)
    trained with the run folder's live files kept in `folder`."""
    live = Live(folder, ["toy"], [])
    try:
        result, _ = train(folder / "checkpoints", stop_at=stop_at, listener=live)
    finally:
        live.close("finished")  # (no tracker hears how it ended)
    return result, live


def test_the_live_curve_grows_survives_a_kill_and_resumes_without_duplicate_steps(
        tmp_path: Path) -> None:
    straight, _ = train(tmp_path / "straight")
    with pytest.raises(Interrupted):  # killed taking step 11: the last checkpoint is step 8's
        live_train(tmp_path, stop_at=10)
    killed = read_live_curve(tmp_path)
    assert [r["step"] for r in killed] == list(range(1, 11))  # read at steps 3, 4, 6, 8, 9, 10
    assert timeless(killed) == timeless(straight.curve[:10])
    progress = read_progress(tmp_path)
    assert progress is not None
    # rewritten at each validation and save, else at most every 2 s: step 10 came too soon
    assert (progress["step"], progress["horizon"], progress["validated_at"]) == (9, STEPS, 9)
    assert progress["validation"] == {"val_mean": 9.0}
    assert progress["loss"] == killed[8]["loss"]

    result, live = live_train(tmp_path)  # resumed from step 8: rows 9 and 10 are dropped
    assert live.at_start == list(range(1, 9))
    rows = read_live_curve(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows == result.curve, "the live curve is the stage's record, row for row"
    assert timeless(rows) == timeless(straight.curve)


def test_a_row_cut_by_a_kill_is_left_out_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    live_train(tmp_path)
    path = tmp_path / LIVE_CURVE
    text, whole = path.read_text(), read_live_curve(tmp_path)
    with path.open("a") as f:
        f.write('{"stage": "toy", "step": 13, "lo')  # the writer was killed mid-row
    assert read_live_curve(tmp_path) == whole
    path.write_text(text + '{"stage": "toy", "step": 13, "lo\n')  # a whole line, not a row
    with pytest.raises(Unreadable, match=r"curve.jsonl:13: Unterminated string"):
        read_live_curve(tmp_path)
    path.write_text(text.replace('"step": 2,', '"step": "two",', 1))
    with pytest.raises(Unreadable, match=r"curve.jsonl:2: column 'step': expected a whole"):
        read_live_curve(tmp_path)


def test_every_validation_is_a_line_of_the_run_log(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.checkpoints"):
        train(tmp_path)
    lines = [r.getMessage() for r in caplog.records if "val_mean" in r.getMessage()]
    assert lines == [f"stage toy: step {k}: val_mean={k}" for k in (3, 6, 9, 12)]


def test_the_plain_progress_line_says_the_run_total_and_eta() -> None:
    stream = io.StringIO()
    line = LineProgress("cwt seed 0 (2e+06 tokens) train pretrain", "step", 0, stream, 0.0)
    line.update(1)  # the total is priced on the first step
    line.total = 400
    time.sleep(0.01)
    line.update(99)
    first, second = stream.getvalue().splitlines()
    assert first.startswith("cwt seed 0 (2e+06 tokens) train pretrain: 1 steps, ")
    assert second.startswith("cwt seed 0 (2e+06 tokens) train pretrain: 100/400 steps (25%), ")
    rate = float(second.split(", ")[1].split()[0])
    eta = second.split("ETA ")[1]
    minutes, seconds = map(int, eta.split(":"))
    assert abs(minutes * 60 + seconds - 300 / rate) <= 1


@pytest.mark.parametrize("text, seconds", [("0:07", 7.0), ("12:34", 754.0),
                                           ("1:02:03", 3723.0), ("2-01:02:03", 176523.0),
                                           ("INVALID", None)])
def test_squeue_time_used_in_seconds(text: str, seconds: float | None) -> None:
    assert Queued("RUNNING", "None", text, 0, "debug").elapsed_s == seconds


def status_json(root: Path, *extra: str) -> list[dict]:
    code, out, err = finish(bench(root, "status", "suite.yaml", "--results", "results",
                                  "--json", *extra), timeout=120)
    assert code == 0, err
    return json.loads(out)


LONG = 1500  # steps of the followed run


@pytest.mark.slow
def test_a_running_suite_is_followed_by_status_json_and_watch_to_its_end(tmp_path: Path) -> None:
    """While `bench run` trains a run of 1500 steps (long enough to outlast a second command's
    start): `bench status --json` shows its stage, step of 1500, ETA, last loss and validation;
    `bench status --watch` redraws until it finished; at the end the live curve is curve.csv's
    rows and the progress its final numbers."""
    write_suite(tmp_path, f"{{steps: {LONG}}}")
    run = bench(tmp_path, "run", "suite.yaml", "--only", "cwt", "--results", "results",
                "--no-progress")
    try:
        seen: list[dict] = []

        def midway() -> bool:
            (status,) = status_json(tmp_path, "--only", "cwt")
            seen.append(status)
            return status["state"] == "running" and status["eta_s"] is not None \
                and status["validation"] is not None and 0 < status["step"] < LONG // 3
        wait_for(midway, "a running run with a step, ETA and validation", timeout=300)
        status = seen[-1]
        assert (status["stage"], status["total"], status["budget"]) == (
            "pretrain", LONG, {"unit": "steps", "amount": LONG})
        assert status["percent"] == pytest.approx(100 * status["step"] / LONG)
        assert status["loss"] > 0 and status["elapsed_s"] > 0 and status["eta_s"] > 0
        assert status["validated_at"] % 5 == 0 and "val_loss" in status["validation"]
        watch = bench(tmp_path, "status", "suite.yaml", "--only", "cwt", "--results",
                      "results", "--watch", "0.5")
        code, out, err = finish(watch, timeout=600)
    finally:
        run.wait(timeout=600)
    assert code == 0 and run.returncode == 0, err
    rounds = out.split("-- ")[1:]
    assert len(rounds) >= 2, out
    assert " running " in rounds[0] and f"/{LONG}" in rounds[0]
    assert "store-e2e: 1 finished" in rounds[-1] and f"{LONG}/{LONG}" in rounds[-1]
    assert all("store-e2e: 1 finished" not in r for r in rounds[:-1]), "it stops at the end"

    (folder,) = (tmp_path / "results").glob("store-e2e/*")
    live, final = read_live_curve(folder), read_curve(folder / "curve.csv")
    assert [r["step"] for r in live] == list(range(1, LONG + 1))
    assert [{k: v for k, v in r.items() if v is not None} for r in final] == live
    (done,) = status_json(tmp_path, "--only", "cwt")
    metrics = read_metrics(folder)
    assert (done["state"], done["step"], done["total"]) == ("finished", LONG, LONG)
    assert done["loss"] == metrics["train.pretrain.final_loss"] == live[-1]["loss"]
    assert done["validation"] == {k: v for k, v in live[-1].items() if k.startswith("val_")}
    log = (folder / "run.log").read_text()
    assert log.count("stage pretrain: step ") == LONG // 5  # a line per validation


def test_watch_needs_positive_seconds(tmp_path: Path) -> None:
    write_suite(tmp_path)
    proc = bench(tmp_path, "status", "suite.yaml", "--watch", "0")
    code, _, err = finish(proc, timeout=120)
    assert code == 2 and "--watch 0.0: expected seconds > 0" in err and "Traceback" not in err
