"""The results store at scale: `bench ls` and a report against 100, 1,000 and 10,000 runs.

One store, grown from size to size, is written through the real Store API (begin with the
resolved config of a demo LM variant, then finish with an LM run's final metrics, a 100-row
training curve with validation every 10 rows and a PR curve; every 20th run fails instead), in
memory-backed /dev/shm where there is one, so that writing it is not a test of the disk's fsync.
Each command then runs in a fresh process, so its time and its peak resident memory are its own;
the growth column is the time ratio to the previous size (10x the runs: near-linear is ~10x).
Goal: `bench ls` at 10,000 runs under 5 s. `bench ls` first imports the folders that changed
(none here: stat calls only); `bench index --rebuild` imports every folder, as the first reader
does after cluster jobs wrote them.

The runs are named as bench named them before run ids left input paths out (`legacy_run_id`),
so the store is one an earlier version wrote: `found s` is what every command that plans runs
pays to find them under those ids (`bench.execution.recorded`: one read of the index, each
record's portable id), planning every run of the store afresh; it checks that all are found.

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

from bench.config.plan import legacy_run_id, run_id
from bench.config.suite import load_suite
from bench.contract import RunSpec, Variant
from bench.store.runs import Store

SUITE = "scale"
DEMO_LM = Path(__file__).resolve().parents[1] / "suites" / "demo" / "lm.yaml"
# Where the demo data lay when the runs were recorded, and the fingerprints recorded then.
RECORDED_DATA = "/mnt/old-cluster/bench-data"
INPUTS = {label: {"path": f"{RECORDED_DATA}/{label}", "sha256": f"{i:064x}"}
          for i, label in enumerate(("data.train", "data.val", "data.shards",
                                     "evals.lambada.path"))}
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


def demo_variants(data: str) -> list[Variant]:
    """The demo LM suite's variants, its data read from `data`."""
    return list(load_suite(DEMO_LM, env={"BENCH_DATA": data}).variants.values())


def planned(i: int, variants: list[Variant]) -> tuple[Variant, int]:
    """Run i of the store: the variants round-robin, then the next seed."""
    return variants[i % len(variants)], i // len(variants)


def add_runs(root: Path, start: int, stop: int) -> None:
    """Runs start..stop-1 of one suite, every 20th one failed, named by the legacy rule."""
    store, rng = Store(root), random.Random(start)
    variants = demo_variants(RECORDED_DATA)
    recall = [i / PR_POINTS for i in range(1, PR_POINTS + 1)]
    for i in range(start, stop):
        variant, seed = planned(i, variants)
        name = legacy_run_id(variant.resolved, seed, INPUTS)
        prov = PROVENANCE | {"started": f"2024-01-01T00:00:{i % 60:02d}", "inputs": INPUTS}
        store.begin(SUITE, variant.name, seed, name, {**variant.resolved, "seed": seed}, prov)
        if i % FAIL_EVERY == FAIL_EVERY - 1:
            store.fail(name, "FloatingPointError: loss is nan", "2024-01-02T00:00:00")
            continue
        curve = training_curve(rng)
        store.finish(name, final_metrics(rng), curve, prov | {"ended": "2024-01-02T00:00:00"},
                     {"pr:val": (recall, [1 - 0.5 * r * rng.random() for r in recall])})


def find_legacy(root: Path, n: int) -> float:
    """Every run of the store planned afresh (portable ids, the data now at another path) and
    found under the id it was recorded with; the seconds the finding took (the planning not
    counted: a command plans its runs anyway)."""
    from bench.execution.recorded import known_runs, with_aliases

    variants = demo_variants("/mnt/new-cluster/bench-data")
    runs = []
    for i in range(n):
        variant, seed = planned(i, variants)
        runs.append(RunSpec(SUITE, variant, seed, run_id(variant.resolved, seed, INPUTS),
                            INPUTS))
    start = time.perf_counter()
    found = with_aliases(runs, known_runs(Store(root), SUITE))
    seconds = time.perf_counter() - start
    names = {p.name for p in (root / SUITE).iterdir()}
    missed = sum(r.run_id not in names for r in found)
    if missed:
        raise SystemExit(f"{missed} of {n} runs not found under their recorded ids")
    return seconds


def measure(command: str, root: Path, pdf: bool) -> None:
    """In this (fresh) process: run one command against the store, print seconds and peak MB."""
    start = time.perf_counter()
    if command.startswith("found:"):
        start = time.perf_counter() - find_legacy(root, int(command.split(":")[1]))
    elif command in ("ls", "rebuild"):
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
                      reference={}, reference_source=None, notes=[],
                      variants=["softmax", "cwt", "cwt_ft"])
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
          f"{'report s':>10}{'growth':>8}{'report MB':>11}{'rebuild s':>11}{'found s':>9}"
          f"{'found MB':>10}  (report: {kind})")
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
            found = child(f"found:{n}", root, not args.no_pdf)
            growth = {k: f"{v['seconds'] / previous[k]:.1f}x" if k in previous else "-"
                      for k, v in (("ls", ls), ("report", rep))}
            print(f"{n:>7}{built:>9.1f}{ls['seconds']:>8.2f}{growth['ls']:>8}"
                  f"{ls['peak_mb']:>8.0f}{rep['seconds']:>10.2f}{growth['report']:>8}"
                  f"{rep['peak_mb']:>11.0f}{rebuilt['seconds']:>11.2f}"
                  f"{found['seconds']:>9.2f}{found['peak_mb']:>10.0f}", flush=True)
            previous = {"ls": ls["seconds"], "report": rep["seconds"]}
    return 0


if __name__ == "__main__":
    sys.exit(main())
