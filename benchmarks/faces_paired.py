"""The face benchmarks' paired tests over images at full scale.

WIDER FACE: the real val ground truth (3,226 images), two generated detectors
(benchmarks/wider_eval.py's generator, seeds 0 and 1: 100 to 1,000 predictions an image), each
image's rows written as a run writes them (`samples_wider_single.jsonl`), read back, and the hard
setting's AP bootstrapped over images. Measured side by side in one process: the bootstrap as
the report runs it (each resample's counts of the drawn images times a sparse array of their
numbers, `summed`) against the same resamples made by copying the drawn images' dense rows;
both must give the same test. The copying one runs --copy-resamples (default 100) and is scaled
to 2,000. Peak memory is traced (tracemalloc: numpy's arrays and Python's objects) while a run's
rows are read and made arrays, in a second, untimed pass.

FDDB: benchmarks/fddb_eval.py's FDDB-sized synthetic set (2,845 images), scored for its
detections and for the same detections with jittered scores; the rows written, read back, and
tpr_disc@1000 bootstrapped over images (rows of 3 numbers per distinct score of the set, summed a
few resamples per product).

    python benchmarks/faces_paired.py [--gt DIR] [--copy-resamples 100]
"""

import argparse
import dataclasses
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from fddb_eval import synthesize
from wider_eval import DEFAULT_GT, generate

from bench.evals.fddb import EVALUATOR as FDDB
from bench.evals.fddb import FDDBEval
from bench.evals.wider import EVALUATOR, SETTINGS, WiderEval, load_wider_mat
from bench.report import paired
from bench.store.folder import samples_file, write_jsonl


def wider(gt_dir: Path, copy_resamples: int) -> bool:
    """The WIDER part; whether the two bootstraps agree."""
    if not (gt_dir / "wider_face_val.mat").is_file():
        print(f"WIDER val ground truth not found in {gt_dir}; nothing to measure")
        return True
    gt = load_wider_mat(gt_dir)
    per = EVALUATOR.per_example("single.hard")
    assert per is not None
    arrays, recorded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):
            predictions = generate(gt, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ev = WiderEval(gt, predictions)
                recorded.append(ev.summarize()["hard"])
            folder = Path(tmp) / f"run{seed}"
            folder.mkdir()
            start = time.perf_counter()
            rows = [row for s in SETTINGS for row in ev.image_rows(s)]
            write_jsonl(folder / samples_file("wider_single"), rows)
            written = time.perf_counter() - start
            size = (folder / samples_file("wider_single")).stat().st_size
            del rows
            start = time.perf_counter()
            found = paired.example_arrays(paired.samples_of(folder, "wider", "single") or [], per)
            made = time.perf_counter() - start
            tracemalloc.start()  # again, traced (tracing slows it several times)
            paired.example_arrays(paired.samples_of(folder, "wider", "single") or [], per)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert found is not None
            array = found[1]
            held = array.data.nbytes + array.indices.nbytes + array.indptr.nbytes
            dense = array.shape[0] * array.shape[1] * 8
            print(f"detector {seed}: {len(ev.scores):,} predictions; rows of 3 settings "
                  f"written in {written:.1f} s, {size / 2**20:.1f} MiB; one setting read and "
                  f"made an array in {made:.1f} s (peak {peak / 2**20:.0f} MiB traced), held "
                  f"sparse {held / 2**20:.1f} MiB (dense {dense / 2**20:.0f} MiB)")
            assert per.aggregate(array) == recorded[-1], "the rows must give the recorded AP"
            arrays.append(array)
    pair = [(arrays[1], arrays[0])]
    start = time.perf_counter()
    summed = paired.paired_bootstrap(pair, per)
    summed_time = time.perf_counter() - start
    copying_per = dataclasses.replace(per, summed=False)
    k = copy_resamples
    start = time.perf_counter()
    copying = paired.paired_bootstrap([(arrays[1].toarray(), arrays[0].toarray())],
                                      copying_per, resamples=k)
    copy_time = (time.perf_counter() - start) * paired.RESAMPLES / k
    same = paired.paired_bootstrap(pair, per, resamples=k) == copying
    print(f"hard AP {recorded[1]:.4f} vs {recorded[0]:.4f}: difference {summed.diff:+.4f} "
          f"[{summed.low:+.4f}, {summed.high:+.4f}], p={summed.p:.3g} over "
          f"{summed.examples:,} images")
    print(f"bootstrap of {paired.RESAMPLES:,} resamples: summed counts {summed_time:.1f} s, "
          f"copying the drawn images {copy_time:.0f} s (scaled from {k}); speed-up "
          f"{copy_time / summed_time:.0f}x; the same {k} resamples give the same test: "
          f"{'yes' if same else 'NO'}")
    return same


def fddb() -> None:
    """The FDDB part."""
    annotations, detections, sizes = synthesize(0)
    rng = np.random.default_rng(1)
    jittered = {n: np.c_[d[:, :4], np.round(np.clip(d[:, 4] + rng.normal(0, 0.1, len(d)), 0, 1),
                                            4)]
                for n, d in detections.items()}
    per = FDDB.per_example("single.tpr_disc@1000")
    assert per is not None
    arrays, readings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, found in (("detections", detections), ("jittered scores", jittered)):
            ev = FDDBEval(annotations, found, sizes, kind="rect")
            readings.append(ev.summarize()["tpr_disc@1000"])
            folder = Path(tmp) / name.replace(" ", "_")
            folder.mkdir()
            write_jsonl(folder / samples_file("fddb_single"), ev.image_rows())
            size = (folder / samples_file("fddb_single")).stat().st_size
            start = time.perf_counter()
            made = paired.example_arrays(paired.samples_of(folder, "fddb", "single") or [], per)
            took = time.perf_counter() - start
            assert made is not None and per.aggregate(made[1]) == readings[-1]
            array = made[1]
            held = array.data.nbytes + array.indices.nbytes + array.indptr.nbytes
            dense = array.shape[0] * array.shape[1] * 8
            print(f"FDDB, {name}: {len(ev.levels):,} distinct scores; rows {size / 2**20:.1f} "
                  f"MiB, read and made an array in {took:.1f} s, held sparse "
                  f"{held / 2**20:.1f} MiB (dense {dense / 2**30:.1f} GiB)")
            arrays.append(array)
    start = time.perf_counter()
    test = paired.paired_bootstrap([(arrays[1], arrays[0])], per)
    print(f"tpr_disc@1000 {readings[1]:.4f} vs {readings[0]:.4f}: difference {test.diff:+.4f} "
          f"[{test.low:+.4f}, {test.high:+.4f}], p={test.p:.3g} over {test.examples:,} images; "
          f"bootstrap of {paired.RESAMPLES:,} resamples {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help="folder of the four .mat")
    parser.add_argument("--copy-resamples", type=int, default=100)
    args = parser.parse_args(argv)
    same = wider(args.gt, args.copy_resamples)
    fddb()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
