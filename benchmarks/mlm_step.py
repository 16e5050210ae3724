"""Cost of one masked-LM training step of a BERT encoder, CWT against softmax, side by side.

One step is forward, backward and AdamW over the parameters the objective trains. Both objectives
run in one process on identical encoder bodies and the same masked batch; timed repetitions are
interleaved (and their order alternated) so drift in machine speed hits both alike. For each
objective: the median step time, the peak memory of one step and its FLOPs; then softmax/cwt.
The softmax head scores K x V logits, CWT a K x K matrix, so the gap grows with the vocabulary.
A third row, "softmax (all)", computes the head's logits at every position before keeping the K
predicted ones, as BertForMaskedLM's forward does and as the CWT paper's vanilla baseline did:
L x B x V logits instead of K x V, the cost behind the paper's throughput ratios.

Memory of a step is the peak of bytes alive during it minus the bytes alive before it (parameters,
buffers, optimizer state, the batch; gradients are freed first): on a GPU from the CUDA allocator's
statistics, on a CPU (no allocator statistics) from the profiler's record of the CPU allocator's
allocations and frees. The peak is that plus the bytes alive before, counting only the objective's
own model (both models stay in memory so that repetitions interleave).

    python benchmarks/mlm_step.py [--preset bert-small] [--batch-size 8 --seq-len 128]
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from bench.encoder.config import EncoderConfig
from bench.encoder.masking import MaskedBatch, Vocabulary, mask_rows, step_generator
from bench.encoder.model import PRESETS, build_encoder, count_parameters, trained_parameters
from bench.encoder.objectives import mlm_loss
from bench.training.flops import count_flops

# Row name -> (objective, where the MLM head computes logits). "softmax (all)" is the
# BertForMaskedLM forward the CWT paper's vanilla baseline used: the head on every position.
VARIANTS = {"softmax": ("softmax", "masked"), "softmax (all)": ("softmax", "all"),
            "cwt": ("cwt", "masked")}
PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIAL_IDS = (0, 1, 2, 3, 4)  # [PAD] [CLS] [SEP] [MASK] [UNK]
MIB = 2**20


def storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors`: views and tied weights count once."""
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(sizes.values())


def cpu_peak_bytes(run: Callable[[], None]) -> int:
    """Peak bytes the CPU allocator holds for `run()` above what it held when it began.

    From the profiler's allocation events: each reports a block's size when allocated and, negated,
    when freed (frees of blocks allocated before are not reported), so the running sum in time
    order is the memory `run` holds. Checked on a matmul chain with fp32 x [1024, 1024],
    w1 [1024, 2048], w2 [2048, 512] alive before: y = x @ w1 (8 MiB), z = y @ w2 (2 MiB), del y,
    u = z @ z.T (4 MiB), x.add_(1), x.T gave exactly 10 MiB (y and z alive together) with 6 MiB
    (z and u) still held at the end; a whole step leaves exactly its gradients behind.

    Not a TorchDispatchMode counting op outputs: while any dispatch mode is active, autograd takes
    the out-of-place backward formulas meant for tensor subclasses, so the step measured is not the
    step run (CWT's gather from E then materialises a second dense V x D gradient: +49 MiB of
    344 at bert-small, enough to flip the softmax/cwt memory ratio).
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    allocations: list[tuple[int, int]] = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending += event.children
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
    live = peak = 0
    for _, size in sorted(allocations, key=lambda a: a[0]):
        live += size
        peak = max(peak, live)
    return peak


@dataclass
class Step:
    """One objective's training step as a closure, with what its memory baseline holds."""

    run: Callable[[], None]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch: Sequence[Tensor]  # a MaskedBatch, or a causal LM's token ids as a 1-tuple
    params: int

    def resident(self) -> list[Tensor]:
        """Tensors alive between steps: weights, buffers, gradients, optimizer state, batch."""
        tensors = [*self.model.parameters(), *self.model.buffers(), *self.batch]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
        return tensors


def masked_batch(vocab_size: int, batch_size: int, seq_len: int, cfg: EncoderConfig
                 ) -> MaskedBatch:
    """Random ordinary tokens between [CLS] and [SEP], masked as in pretraining."""
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(len(SPECIAL_IDS), vocab_size, (batch_size, seq_len), generator=gen)
    rows[:, 0], rows[:, -1] = CLS, SEP
    vocab = Vocabulary(vocab_size, MASK, SPECIAL_IDS)
    return mask_rows(rows, vocab, cfg.masking, step_generator(0, 0))


def make_step(args: argparse.Namespace, objective: str, head_positions: str,
              device: torch.device) -> Step:
    """A fresh encoder (same initial body for every objective) and its optimizer step."""
    cfg = EncoderConfig.model_validate({
        "head_positions": head_positions,
        "model": {"preset": args.preset},
        "data": {"train": "unused.jsonl", "seq_len": args.seq_len,
                 "tokenizer": {"train_bpe": args.vocab_size}},
        "train": {"batch_size": args.batch_size, "optim": {"lr": 1e-4}},
        "objective": objective,
    })
    torch.manual_seed(0)
    model = build_encoder(cfg.model, args.vocab_size, PAD, objective).to(device).train()
    optimizer = torch.optim.AdamW(trained_parameters(model, objective), lr=cfg.train.optim.lr)
    batch = masked_batch(args.vocab_size, args.batch_size, args.seq_len, cfg).to(device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda"
                else nullcontext())

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = mlm_loss(model, batch, cfg)
        loss.backward()
        optimizer.step()

    return Step(run, model, optimizer, batch, count_parameters(model, objective)["total"])


def step_memory(step: Step, device: torch.device) -> tuple[int, int]:
    """Bytes alive before one step (gradients freed) and the peak bytes of the step above them."""
    step.optimizer.zero_grad(set_to_none=True)
    baseline = storage_bytes(step.resident())
    if device.type != "cuda":
        return baseline, cpu_peak_bytes(step.run)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step.run()
    torch.cuda.synchronize(device)
    return baseline, torch.cuda.max_memory_allocated(device) - before


def median_seconds(steps: dict[str, Step], device: torch.device, warmup: int,
                   repeats: int) -> dict[str, float]:
    """Median step time of each objective, repetitions interleaved and their order alternated."""
    times: dict[str, list[float]] = {objective: [] for objective in steps}
    names = list(steps)
    for rep in range(warmup + repeats):
        for objective in names if rep % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            steps[objective].run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rep >= warmup:
                times[objective].append(time.perf_counter() - start)
    return {objective: statistics.median(t) for objective, t in times.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (cuda: bf16 autocast)")
    parser.add_argument("--preset", choices=list(PRESETS), default="bert-base")
    parser.add_argument("--batch-size", type=int, default=8, help="rows a step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens a row")
    parser.add_argument("--vocab-size", type=int, default=50257, help="the Pythia tokenizer's")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print a table of step time, step memory and FLOPs per objective, and softmax/cwt."""
    args = parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    steps = {name: make_step(args, *spec, device) for name, spec in VARIANTS.items()}
    k = len(steps["cwt"].batch.targets)
    memory_kind = "CUDA allocator statistics" if device.type == "cuda" else "profiler allocations"
    print(f"{args.preset}, vocab {args.vocab_size}, batch {args.batch_size}x{args.seq_len} "
          f"(K = {k} predicted positions), device {device}, torch threads "
          f"{torch.get_num_threads()}, warm-up {args.warmup}, repeats {args.repeats} (medians); "
          f"memory: {memory_kind}")
    seconds = median_seconds(steps, device, args.warmup, args.repeats)
    rows: dict[str, dict[str, float]] = {}
    for objective, step in steps.items():
        baseline, step_bytes = step_memory(step, device)
        rows[objective] = {"params": step.params, "ms": seconds[objective] * 1e3,
                           "step_mib": step_bytes / MIB, "peak_mib": (baseline + step_bytes) / MIB,
                           "gflops": count_flops(step.run) / 1e9}
    header = (f"{'objective':<20} {'params':>12} {'step ms':>9} {'step MiB':>9} "
              f"{'peak MiB':>9} {'GFLOPs':>9}")
    print(header)
    print("-" * len(header))
    for objective, row in rows.items():
        print(f"{objective:<20} {row['params']:>12,.0f} {row['ms']:>9.1f} "
              f"{row['step_mib']:>9.1f} {row['peak_mib']:>9.1f} {row['gflops']:>9.1f}")
    for name in ("softmax", "softmax (all)"):
        ratio = {key: rows[name][key] / rows["cwt"][key] for key in rows["cwt"]}
        print(f"{name + '/cwt':<20} {ratio['params']:>12.3f} {ratio['ms']:>9.2f} "
              f"{ratio['step_mib']:>9.2f} {ratio['peak_mib']:>9.2f} {ratio['gflops']:>9.3f}")
    for name in ("softmax", "softmax (all)"):
        ratio = {key: rows[name][key] / rows["cwt"][key] for key in rows["cwt"]}
        print(f"{name}/cwt: time x{ratio['ms']:.2f}, step memory x{ratio['step_mib']:.2f}, "
              f"peak memory x{ratio['peak_mib']:.2f}, FLOPs x{ratio['gflops']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
