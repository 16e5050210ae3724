"""The FLOP meter: measured vs analytic FLOPs of a linear stack, and budget overshoot.

    python benchmarks/flop_meter.py
"""

import logging
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.flops import count_flops
from bench.training.train import Stage, train_stage

WIDTHS = (256, 1024, 1024, 512, 10)
BATCH = 64


def analytic(batch: int, widths: tuple[int, ...]) -> int:
    """Forward 2*n*in*out per layer; backward the weight gradient everywhere and the input
    gradient for every layer but the first (its input needs no gradient)."""
    layers = list(pairwise(widths))
    forward = sum(2 * batch * i * o for i, o in layers)
    backward = sum(2 * batch * i * o for i, o in layers) + sum(2 * batch * i * o
                                                               for i, o in layers[1:])
    return forward + backward


def stack() -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, o in pairwise(WIDTHS):
        layers += [nn.Linear(i, o), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def main(argv: list[str] | None = None) -> int:
    torch.manual_seed(0)
    model = stack()
    x = torch.randn(BATCH, WIDTHS[0])
    measured = count_flops(lambda: model(x).square().mean().backward())
    expected = analytic(BATCH, WIDTHS)
    print(f"linear stack {WIDTHS}, batch {BATCH}: measured {measured:,} FLOPs, analytic "
          f"{expected:,}, ratio {measured / expected:.6f}")
    print("budget overshoot (FLOPs budget = k.5 steps; a budget never overshoots):")
    for k in (3, 10, 40):
        stage = Stage(name="fit", model=model, parameters=list(model.parameters()),
                      optim=OptimConfig(lr=1e-3), micro_batches=lambda s: [x],
                      loss=lambda b: model(b).square().mean(), items=lambda b: b.shape[0])
        budget = StageBudget("flops", (k + 0.5) * measured)
        with tempfile.TemporaryDirectory() as tmp:
            result = train_stage(stage, budget, Path(tmp), torch.device("cpu"),
                                 logging.getLogger("meter"), progress=False)
        print(f"  budget {budget.amount:.4g}: {result.steps} steps, consumed {result.flops:.4g} "
              f"({result.flops / budget.amount:.4f} of budget, unspent "
              f"{(budget.amount - result.flops) / measured:.2f} step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
