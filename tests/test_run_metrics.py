"""The training metrics every run records: totals, throughput, FLOP/s, MFU, peak memory."""

import math

import pytest

from bench.execution.runner import _training_metrics
from bench.training.train import StageResult


def _stage(name: str, flops: float, seconds: float, peak: float = math.nan,
           world_size: int = 1) -> StageResult:
    return StageResult(name, steps=10, flops=flops, items=1000, seconds=seconds,
                       peak_memory=peak, world_size=world_size)


def test_flops_per_second_and_mfu_cover_every_stage_and_process() -> None:
    stages = [_stage("pretrain", 6e15, 10.0, 2e9, 2), _stage("head_finetune", 1e15, 4.0, 3e9, 2)]
    metrics = _training_metrics(stages, "tokens", "NVIDIA H100 80GB HBM3")
    assert metrics["train.flops_per_s"] == pytest.approx(7e15 / 14)
    assert metrics["train.mfu"] == pytest.approx(7e15 / 14 / (2 * 989e12))
    assert metrics["train.peak_memory_bytes"] == 3e9
    assert metrics["train.world_size"] == 2


def test_a_cpu_run_has_flops_per_second_but_no_mfu_or_device_memory() -> None:
    metrics = _training_metrics([_stage("pretrain", 1e12, 2.0)], "tokens", "x86_64 CPU")
    assert metrics["train.flops_per_s"] == pytest.approx(5e11)
    assert "train.mfu" not in metrics and "train.peak_memory_bytes" not in metrics
