"""Time one training step (forward, backward, AdamW) of CWT against softmax, side by side.

Both objectives run in one process on identical model bodies and batches, with repetitions
interleaved (and their order alternated) so drift in machine speed hits both alike. CWT's cost is
O(K^2 D) against the softmax head's O(K D V): the gap grows with the vocabulary.

    python benchmarks/step_time.py [--device cuda] [--batch-size 4 --seq-len 128]
"""

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from mlm_step import Step

from bench.lm.config import ModelConfig
from bench.lm.model import build_model, count_parameters
from bench.lm.objectives import causal_lm_loss
from bench.text.config import CWTConfig

OBJECTIVES = ("softmax", "cwt")


@dataclass(frozen=True)
class Shape:
    """One benchmarked geometry: a model preset, a vocabulary and a micro-batch."""

    name: str
    preset: str
    vocab_size: int
    batch_size: int
    seq_len: int


def make_step(shape: Shape, objective: str, device: torch.device, *,
              compiled: bool = False) -> Step:
    """One optimizer step as a closure, with the model, optimizer and batch it holds.

    The softmax model is untied (as Pythia); the CWT model is tied, since its head is E^T and is
    never evaluated in training. `compiled`: the forward and loss go through `torch.compile`
    (their backward with them); the optimizer step stays eager.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset=shape.preset), shape.vocab_size, tied=objective == "cwt")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.seq_len), generator=gen)
    ids = ids.to(device)
    cwt = CWTConfig()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if device.type == "cuda"
        else nullcontext()
    )

    def loss() -> torch.Tensor:
        return causal_lm_loss(model, ids, objective, cwt)

    forward = torch.compile(loss) if compiled else loss

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            value = forward()
        value.backward()
        optimizer.step()

    return Step(step, model, optimizer, (ids,), count_parameters(model)["total"])


def time_shape(
    shape: Shape, device: torch.device, warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median step seconds, tokens per second and parameters of each objective at one shape."""
    steps = {objective: make_step(shape, objective, device) for objective in OBJECTIVES}
    times: dict[str, list[float]] = {objective: [] for objective in OBJECTIVES}
    for rep in range(warmup + repeats):
        order = OBJECTIVES if rep % 2 == 0 else OBJECTIVES[::-1]
        for objective in order:
            _sync(device)
            start = time.perf_counter()
            steps[objective].run()
            _sync(device)
            if rep >= warmup:
                times[objective].append(time.perf_counter() - start)
    tokens = shape.batch_size * shape.seq_len
    result = {}
    for objective in OBJECTIVES:
        median = statistics.median(times[objective])
        result[objective] = {
            "seconds": median,
            "tokens_per_s": tokens / median,
            "params": steps[objective].params,
        }
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast)")
    parser.add_argument("--batch-size", type=int, default=4, help="pythia-70m shape: rows")
    parser.add_argument("--seq-len", type=int, default=128, help="pythia-70m shape: tokens a row")
    parser.add_argument("--vocab-size", type=int, default=50257, help="pythia-70m shape")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--shapes", nargs="+", choices=["pythia-70m", "demo"], default=["pythia-70m", "demo"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print a table of median step times; the ratio softmax/cwt is CWT's speed-up."""
    args = parse_args(argv)
    device = torch.device(args.device)
    shapes = {
        "pythia-70m": Shape(
            "pythia-70m", "pythia-70m", args.vocab_size, args.batch_size, args.seq_len
        ),
        "demo": Shape("demo", "tiny", 8192, 16, 128),
    }
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, "
        f"warm-up {args.warmup}, repeats {args.repeats} (medians)"
    )
    header = (
        f"{'shape':<11} {'vocab':>6} {'batch':>8} {'objective':<8} {'params':>11} "
        f"{'step ms':>9} {'tokens/s':>9} {'softmax/cwt':>11}"
    )
    print(header)
    print("-" * len(header))
    for name in args.shapes:
        shape = shapes[name]
        result = time_shape(shape, device, args.warmup, args.repeats)
        ratio = result["softmax"]["seconds"] / result["cwt"]["seconds"]
        for objective in OBJECTIVES:
            row = result[objective]
            print(
                f"{shape.name:<11} {shape.vocab_size:>6} "
                f"{f'{shape.batch_size}x{shape.seq_len}':>8} {objective:<8} "
                f"{row['params']:>11,} {row['seconds'] * 1e3:>9.1f} "
                f"{row['tokens_per_s']:>9.0f} "
                f"{f'{ratio:.2f}' if objective == 'cwt' else '':>11}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
