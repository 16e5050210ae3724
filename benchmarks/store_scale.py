"""The results store at scale: `bench ls` and a report against 100, 1,000 and 10,000 runs.

One store, grown from size to size, is written through the real Store API (begin, then finish
with an LM run's final metrics, a 100-row training curve with validation every 10 rows and a PR
curve; every 20th run fails instead), in memory-backed /dev/shm where there is one, so that
writing it is not a test of the disk's fsync. Each command then runs in a fresh process, so its
time and its peak resident memory are its own; the growth column is the time ratio to the
previous size (10x the runs: near-linear is ~10x). Goal: `bench ls` at 10,000 runs under 5 s.
`bench ls` first imports the folders that changed (none here: stat calls only); `bench index
--rebuild` imports every folder, as the first reader does after cluster jobs wrote them.

    python benchmarks/store_scale.py [--sizes 100 1000 10000] [--no-pdf]
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.store.runs import Store

SUITE = "scale"
VARIANTS = ("softmax", "cwt", "cwt_ft", "nce")
CURVE_ROWS, VAL_EVERY, FAIL_EVERY, PR_POINTS = 100, 10, 20, 50
PROVENANCE = {"git_commit": "0" * 40, "git_dirty": False, "device": "cpu",
              "device_name": "cpu", "host": "bench-host", "python": "3.11.9",
              "packages": {f"package-{i}": f"1.{i}.0" for i in range(40)}}


def final_metrics(rng: random.Random) -> dict[str, float]:
    """The final metrics an LM run records: training totals per stage, LAMBADA, validation."""
    out = {"lambada.acc": rng.uniform(0.1, 0.3), "lambada.acc_stderr": rng.uniform(0.005, 0.01),
           "lambada.ppl": rng.uniform(100, 300), "lambada.ppl_stderr": rng.uniform(1, 5),
           "val.nll": rng.uniform(3, 5), "val.acc": rng.uniform(0.2, 0.4),
           "model.params": 7.0e6, "train.tokens_per_s": rng.uniform(1e4, 2e4)}
    for stage in ("", "pretrain."):
        out |= {f"train.{stage}steps": 1000.0, f"train.{stage}flops": 6.0e12,
                f"train.{stage}tokens": 2.0e6, f"train.{stage}seconds": rng.uniform(90, 110)}
    return out


def training_curve(rng: random.Random) -> list[dict[str, Any]]:
    """What the training loop logs: loss and learning rate every row, validation every 10th."""
    rows = []
    for k in range(CURVE_ROWS):
        row = {"stage": "pretrain", "step": 10 * (k + 1), "tokens": 20480 * (k + 1),
               "flops": 6.0e10 * (k + 1), "loss": 8.0 - 4.0 * k / CURVE_ROWS + rng.random(),
               "lr": 3e-3, "wall": 1.0 * k}
        if (k + 1) % VAL_EVERY == 0:
            row |= {"val_nll": 7.0 - 3.0 * k / CURVE_ROWS, "val_acc": 0.1 + 0.2 * k / CURVE_ROWS}
        rows.append(row)
    return rows


def add_runs(root: Path, start: int, stop: int) -> None:
    """Runs start..stop-1 of one suite, round-robin over the variants, every 20th one failed."""
    store, rng = Store(root), random.Random(start)
    recall = [i / PR_POINTS for i in range(1, PR_POINTS + 1)]
    for i in range(start, stop):
        run_id = f"{i:012x}"
        prov = PROVENANCE | {"started": f"2024-01-01T00:00:{i % 60:02d}"}
        variant, seed = VARIANTS[i % len(VARIANTS)], i // len(VARIANTS)
        store.begin(SUITE, variant, seed, run_id, {"variant": variant, "seed": seed}, prov)
        if i % FAIL_EVERY == FAIL_EVERY - 1:
            store.fail(run_id, "FloatingPointError: loss is nan", "2024-01-02T00:00:00")
            continue
        curve = training_curve(rng)
        store.finish(run_id, final_metrics(rng), curve, prov | {"ended": "2024-01-02T00:00:00"},
                     {"pr:val": (recall, [1 - 0.5 * r * rng.random() for r in recall])})


def measure(command: str, root: Path, pdf: bool) -> None:
    """In this (fresh) process: run one command against the store, print seconds and peak MB."""
    start = time.perf_counter()
    if command in ("ls", "rebuild"):
        from bench.cli import main

        argv = ["ls"] if command == "ls" else ["index", "--rebuild"]
        with open("/dev/null", "w") as sink:
            stdout, sys.stdout = sys.stdout, sink
            try:
                main([*argv, "--results", str(root)])
            finally:
                sys.stdout = stdout
    else:
        report(root, pdf)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def report(root: Path, pdf: bool) -> None:
    """The report of the suite: HTML and PDF, or the HTML alone."""
    from bench.report import ReportSpec
    from bench.report.render import render_html, render_report
    from bench.report.suite_data import load_suite_data

    spec = ReportSpec(suite=SUITE, title=SUITE, baseline="softmax",
                      metrics=["lambada.acc", "lambada.ppl", "val.nll"],
                      higher_is_better={"lambada.acc": True, "lambada.ppl": False,
                                        "val.nll": False},
                      reference={}, reference_source=None, notes=[], variants=list(VARIANTS))
    index = Store(root).index_path
    if pdf:
        render_report(index, spec, root / "reports")
    else:
        render_html(index, spec, load_suite_data(index, SUITE))


def child(command: str, root: Path, pdf: bool) -> dict[str, float]:
    argv = [sys.executable, __file__, "--measure", command, str(root)]
    out = subprocess.run(argv + ([] if pdf else ["--no-pdf"]), check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000, 10000])
    parser.add_argument("--no-pdf", action="store_true", help="time the report's HTML only")
    parser.add_argument("--measure", nargs=2, metavar=("COMMAND", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.measure[0], Path(args.measure[1]), not args.no_pdf)
        return 0
    kind = "HTML" if args.no_pdf else "HTML+PDF"
    print(f"{'runs':>7}{'added s':>9}{'ls s':>8}{'growth':>8}{'ls MB':>8}"
          f"{'report s':>10}{'growth':>8}{'report MB':>11}{'rebuild s':>11}  (report: {kind})")
    previous: dict[str, float] = {}
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        root, have = Path(tmp), 0
        for n in sorted(args.sizes):  # one store, grown from size to size
            start = time.perf_counter()
            add_runs(root, have, n)
            built, have = time.perf_counter() - start, n
            ls, rep = child("ls", root, not args.no_pdf), child("report", root, not args.no_pdf)
            rebuilt = child("rebuild", root, not args.no_pdf)
            growth = {k: f"{v['seconds'] / previous[k]:.1f}x" if k in previous else "-"
                      for k, v in (("ls", ls), ("report", rep))}
            print(f"{n:>7}{built:>9.1f}{ls['seconds']:>8.2f}{growth['ls']:>8}"
                  f"{ls['peak_mb']:>8.0f}{rep['seconds']:>10.2f}{growth['report']:>8}"
                  f"{rep['peak_mb']:>11.0f}{rebuilt['seconds']:>11.2f}", flush=True)
            previous = {"ls": ls["seconds"], "report": rep["seconds"]}
    return 0


if __name__ == "__main__":
    sys.exit(main())
