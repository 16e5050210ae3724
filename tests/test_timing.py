"""The one timing helper: interleaved rounds after warm-up, median and spread, step rates."""

import math
from collections.abc import Callable

import pytest

from bench.util.timing import interleaved, step_rate, summarize


class VirtualClock:
    """Time that passes only when a task says how long it took: timings known exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def task(self, name: str, durations_ms: list[float]) -> Callable[[], None]:
        def run() -> None:
            self.calls.append(name)
            self.now += durations_ms[len([c for c in self.calls if c == name]) - 1] / 1000

        return run


def test_summary_median_is_not_moved_by_an_outlier() -> None:
    steady = summarize([10.0, 11.0, 12.0, 13.0, 14.0])
    spiked = summarize([10.0, 11.0, 12.0, 13.0, 500.0])
    assert steady.median == spiked.median == 12.0
    assert spiked.iqr == steady.iqr == 2.0 and spiked.high == 500.0 and spiked.n == 5
    assert summarize([7.0]).iqr == 0.0
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.median)


def test_rounds_interleave_rotate_and_skip_warmup() -> None:
    clock = VirtualClock()
    syncs = []
    tasks = {k: clock.task(k, [1.0] * 10) for k in "abc"}
    out = interleaved(tasks, warmup=1, repeats=3, clock=clock, sync=lambda: syncs.append(1))
    # Every round calls each task once; round r starts at task r mod 3.
    assert "".join(clock.calls) == "abc" "bca" "cab" "abc"
    assert {k: t.n for k, t in out.items()} == {"a": 3, "b": 3, "c": 3}  # warm-up not counted
    assert len(syncs) == 2 * len(clock.calls)  # before the clock starts and before it stops


def test_each_task_gets_its_own_times_and_an_outlier_stays_in_the_spread() -> None:
    clock = VirtualClock()
    # Warm-up round first (slow, not counted), then five timed rounds; b hits a burst of load.
    tasks = {"a": clock.task("a", [90.0, 2.0, 2.0, 2.0, 2.0, 2.0]),
             "b": clock.task("b", [90.0, 5.0, 5.0, 400.0, 5.0, 5.0])}
    out = interleaved(tasks, warmup=1, repeats=5, clock=clock)
    assert out["a"].median == pytest.approx(2.0) and out["a"].high == pytest.approx(2.0)
    assert out["b"].median == pytest.approx(5.0) and out["b"].high == pytest.approx(400.0)
    assert out["b"].metrics("ms") == {"ms": pytest.approx(5.0), "ms.iqr": pytest.approx(0.0),
                                      "ms.n": 5.0}


def test_bad_repeats_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, warmup=0, repeats=0)


def _rows(seconds: list[float], tokens_per_step: int = 100) -> list[dict[str, float]]:
    """Curve rows as the training loop writes them: cumulative wall seconds and tokens."""
    wall, rows = 0.0, []
    for step, s in enumerate(seconds, 1):
        wall += s
        rows.append({"step": step, "wall": wall, "tokens": step * tokens_per_step, "loss": 1.0})
    return rows


def test_step_rate_is_the_median_after_warmup() -> None:
    # Three slow warm-up steps, then 0.5 s per step of 100 tokens, one step slowed by load.
    rows = _rows([5.0, 3.0, 2.0, 0.5, 0.5, 0.5, 10.0, 0.5, 0.5])
    rate = step_rate(rows, warmup=3)
    assert rate.n == 6 and rate.median == pytest.approx(200.0)
    assert rate.low == pytest.approx(10.0) and rate.high == pytest.approx(200.0)
    # The whole-stage average the warm-up and the slow step drag down, for contrast.
    assert rows[-1]["tokens"] / rows[-1]["wall"] < 50
    assert step_rate(rows, warmup=0).n == 9
    assert step_rate(rows[:3], warmup=3).n == 0


def test_faces_speed_eval_times_every_size_and_mode_with_its_spread(tmp_path) -> None:
    import logging

    import torch

    from bench.evals.evaluator import EvalSetting
    from bench.evals.speed import EVALUATOR, SpeedEvalConfig
    from bench.faces.config import SSHModelConfig
    from bench.faces.detector import SSHDetector
    from bench.faces.model import build_ssh

    cfg = SSHModelConfig(width=0.125)
    torch.manual_seed(0)
    speed = SpeedEvalConfig(sizes=[(32, 48), (24, 40)], modes=["single", "pyramid"], warmup=0,
                            repeats=2)
    detector = SSHDetector(build_ssh(cfg), cfg.module_specs(), torch.device("cpu"), False, 0)
    out = EVALUATOR.evaluate(speed, detector,
                             EvalSetting(tmp_path, logging.getLogger("speed"))).metrics
    names = [f"{m}.{s}_ms" for m in ("single", "pyramid") for s in ("32x48", "24x40")]
    assert sorted(out) == sorted(f"{n}{x}" for n in names for x in ("", ".iqr", ".n"))
    assert sorted(out) == sorted(EVALUATOR.metrics(speed))  # what a report may name
    for name in names:
        assert out[name] > 0 and out[f"{name}.iqr"] >= 0 and out[f"{name}.n"] == 2
