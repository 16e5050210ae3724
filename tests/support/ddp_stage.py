"""A small training stage run by tests/test_distributed.py, alone or under torchrun: a model
with dropout (randomness per micro-batch) and a parameter its loss never uses (DDP must cope).

usage: python ddp_stage.py OUT [--fail-at STEP]; rank 0 writes OUT/curve.json.
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from torch import nn

from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.distributed import join, leave, local_part, world
from bench.training.train import Stage, train_stage

BATCH, MICRO, STEPS = 8, 2, 17


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--fail-at", type=int)
    args = parser.parse_args()
    device = join(torch.device("cpu"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Dropout(0.3), nn.Linear(32, 1))
    model.add_module("unused", nn.Linear(3, 3))
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=data), torch.randn(64, 1, generator=data)

    def micro_batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if step == args.fail_at:
            raise SystemExit(3)  # as a kill would: the last checkpoint stays
        rows = (torch.arange(step * BATCH, (step + 1) * BATCH) % len(x))[
            local_part(BATCH, micro=MICRO)]
        return list(zip(x[rows].split(MICRO), y[rows].split(MICRO), strict=True))

    stage = Stage(
        name="fit", model=model, parameters=list(model.parameters()),
        optim=OptimConfig.model_validate({"lr": 0.05, "warmup": 3, "schedule": "cosine"}),
        micro_batches=micro_batches, loss=lambda b: ((model[:4](b[0]) - b[1]) ** 2).mean(),
        items=lambda b: b[0].shape[0], validate=lambda _: {"w": float(model[0].weight.sum())},
        validate_every=5, checkpoint_every=4, seed=11)
    result = train_stage(stage, StageBudget("steps", STEPS), Path(args.out) / "checkpoints",
                         device, logging.getLogger("ddp_stage"), progress=False)
    if world().main:
        (Path(args.out) / "curve.json").write_text(json.dumps(
            {"curve": result.curve, "flops": result.flops, "items": result.items,
             "world_size": result.world_size}))
    leave()


if __name__ == "__main__":
    main()
