"""One run on 2 processes vs 1 (gloo, this machine's CPUs): step time and the curve.

The demo LM suite's CWT variant (suites/demo/lm.yaml, the demo corpus) is trained for a fixed
number of steps by `bench run` and by `bench run --nproc 2`, each in its own results folder; the
global batch and micro-batches are the same, so the curves must agree to float tolerance. Step
time is each run's median per-step rate (`train.tokens_per_s`, after warm-up). On a machine with
fewer cores than 2 x threads per process the 2-process run is not expected to be faster: the
point is the equality, and the overhead of the gradient all-reduce.

    python benchmarks/ddp_cpu.py [--steps 40]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = """\
extends: {demo}
suite: ddp-cpu-benchmark
seeds: [0]
budget: {{steps: {steps}}}
train: {{batch_size: 16, micro_batch_size: 4, checkpoint_every: 1000, validate_every: {steps}}}
evals: []
"""


def run(suite: Path, results: Path, nproc: int) -> Path:
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)))
    subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--only", "cwt",
                    "--results", str(results), "--no-progress", "--device", "cpu",
                    "--nproc", str(nproc)], check=True, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return next((results / "ddp-cpu-benchmark").iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(SUITE.format(demo=ROOT / "suites/demo/lm.yaml", steps=args.steps))
        runs = {n: run(suite, Path(tmp) / f"n{n}", n) for n in (1, 2)}
        metrics = {n: json.loads((d / "metrics.json").read_text()) for n, d in runs.items()}
        curves = {}
        for n, d in runs.items():
            with (d / "curve.csv").open() as f:
                curves[n] = [float(r["loss"]) for r in csv.DictReader(f)]
    worst = max(abs(a - b) / abs(a) for a, b in zip(curves[1], curves[2], strict=True))
    rate = {n: m["train.tokens_per_s"] for n, m in metrics.items()}
    print(f"{'processes':>9}  {'tokens/s (median step)':>22}  {'ms/step':>8}  final loss")
    for n in (1, 2):
        ms = 1000 * metrics[n]["train.tokens"] / metrics[n]["train.steps"] / rate[n]
        print(f"{n:>9}  {rate[n]:>22.0f}  {ms:>8.1f}  {curves[n][-1]:.6f}")
    print(f"2 vs 1 process step time: {rate[1] / rate[2]:.2f}x; "
          f"largest relative loss difference over {len(curves[1])} steps: {worst:.2e}; "
          f"same FLOPs: {metrics[1]['train.flops'] == metrics[2]['train.flops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
