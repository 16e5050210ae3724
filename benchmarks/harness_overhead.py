"""The harness's own cost: a budgeted training stage against a bare PyTorch loop.

Both train the same model (demo shape: preset tiny, vocabulary 8,192, batch 16 x 128) on the same
batches for the same number of steps, in one process, repetitions interleaved. The harness loop
adds the schedule, the budget meter, the curve, the NaN check, progress and (in the second
setting) the demo's checkpoint cadence; the goal is 3% or less.

    python benchmarks/harness_overhead.py [--steps 30] [--repeats 3]
"""

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.lm.config import ModelConfig
from bench.lm.model import build_model
from bench.lm.objectives import causal_lm_loss
from bench.schema import OptimConfig
from bench.text.config import CWTConfig
from bench.training.budget import StageBudget
from bench.training.sampling import batch_at
from bench.training.train import Stage, train_stage

VOCAB, BATCH, SEQ = 8192, 16, 128
OPTIM = OptimConfig(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, warmup=0.05, clip=1.0)


def rows() -> torch.Tensor:
    return torch.randint(0, VOCAB, (256, SEQ), generator=torch.Generator().manual_seed(0))


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(preset="tiny"), VOCAB, tied=False)


def bare_loop(data: torch.Tensor, steps: int) -> float:
    """The loop a researcher would write by hand: AdamW, clipping, nothing else."""
    model = fresh_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=OPTIM.lr, betas=OPTIM.betas,
                                  weight_decay=OPTIM.weight_decay)
    cwt = CWTConfig()
    start = time.perf_counter()
    for k in range(steps):
        loss = causal_lm_loss(model, batch_at(data, k, BATCH, 0), "softmax", cwt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def harness_loop(data: torch.Tensor, steps: int, checkpoint_every: int) -> float:
    """The same training through bench.training.train.train_stage under a steps budget."""
    model = fresh_model()
    cwt = CWTConfig()
    stage = Stage(name="pretrain", model=model, parameters=list(model.parameters()), optim=OPTIM,
                  micro_batches=lambda k: [batch_at(data, k, BATCH, 0)],
                  loss=lambda ids: causal_lm_loss(model, ids, "softmax", cwt),
                  items=lambda ids: ids.numel(), checkpoint_every=checkpoint_every)
    log = logging.getLogger("overhead")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_stage(stage, StageBudget("steps", steps), Path(tmp), torch.device("cpu"), log,
                    progress=False)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = rows()
    bare_loop(data, 3)  # warm-up: allocator, kernels, imports
    cadence = min(50, max(args.steps // 2, 1))  # the demo checkpoints every 50 steps
    settings = {"bare": lambda: bare_loop(data, args.steps),
                "harness": lambda: harness_loop(data, args.steps, 10**9),
                f"harness+ckpt/{cadence}": lambda: harness_loop(data, args.steps, cadence)}
    times: dict[str, list[float]] = {k: [] for k in settings}
    for r in range(args.repeats):
        order = list(settings) if r % 2 == 0 else list(reversed(settings))
        for name in order:
            times[name].append(settings[name]())
    bare = statistics.median(times["bare"])
    print(f"harness overhead, demo shape (tiny, V={VOCAB}, {BATCH}x{SEQ}), {args.steps} steps, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<16} {med:8.3f} s   {1000 * med / args.steps:7.1f} ms/step   "
              f"ratio to bare {med / bare:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
