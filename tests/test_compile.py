"""`train.compile`: the loss runs compiled, and the FLOPs a budget counts do not change."""

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.train import Stage, StageResult, train_stage


def _train(compiled: bool, folder: Path) -> StageResult:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    stage = Stage(name="fit", model=model, parameters=list(model.parameters()),
                  optim=OptimConfig.model_validate({"lr": 0.05}),
                  micro_batches=lambda k: [(x[k % 4 * 8:][:8], y[k % 4 * 8:][:8])],
                  loss=lambda b: ((model(b[0]) - b[1]) ** 2).mean(),
                  items=lambda b: 8, compile=compiled)
    return train_stage(stage, StageBudget("steps", 6), folder, torch.device("cpu"),
                       logging.getLogger("compile"), progress=False)


@pytest.mark.slow
def test_a_compiled_stage_counts_the_flops_of_an_eager_one(tmp_path: Path) -> None:
    import torch._dynamo.utils

    eager = _train(False, tmp_path / "eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = _train(True, tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert compiled.flops == eager.flops > 0
    assert [r["flops"] for r in compiled.curve] == [r["flops"] for r in eager.curve]
    assert [r["loss"] for r in compiled.curve] == pytest.approx(
        [r["loss"] for r in eager.curve], rel=1e-4)
