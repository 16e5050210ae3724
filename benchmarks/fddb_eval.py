"""Time the FDDB evaluator on a data set of FDDB's real size, and the slow reference beside it.

FDDB itself is not needed: a deterministic synthetic set of the same shape stands in (2,845
images of about 450 x 350 pixels, about 5,200 ellipse faces, 10 to 50 rectangle detections per
image, some jittered from the faces, the rest anywhere), with image sizes given in memory. The
whole evaluation (masks, IoUs, a matching per threshold, merging, reading) is timed end to end;
then FDDBEval and the loop-by-loop reference of tests/test_fddb_eval.py run on the same first
images, checked equal, for a speed ratio measured side by side.

    python benchmarks/fddb_eval.py [--seed 0] [--subset 100]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.evals.fddb import FDDBEval

N_IMAGES, N_FACES = 2845, 5171


def synthesize(seed: int = 0, n_images: int = N_IMAGES, n_faces: int = N_FACES):
    """(annotations, detections, sizes) shaped like FDDB with rectangle detections."""
    rng = np.random.default_rng(seed)
    faces_per_image = 1 + rng.multinomial(n_faces - n_images, np.full(n_images, 1 / n_images))
    annotations, detections, sizes = {}, {}, {}
    for i, k in enumerate(faces_per_image):
        name = f"2002/08/{i // 100 + 1:02d}/big/img_{i}"
        width, height = int(rng.integers(400, 501)), int(rng.integers(300, 401))
        rb = rng.uniform(12, 60, k)
        ra = rb * rng.uniform(1.15, 1.45, k)
        cx, cy = rng.uniform(0, width, k), rng.uniform(0, height, k)
        angle = rng.normal(np.pi / 2, 0.25, k) * rng.choice([-1, 1], k)
        annotations[name] = np.column_stack([ra, rb, angle, cx, cy])
        n_dets = int(rng.integers(10, 51))
        found = rng.random(k) < 0.85
        jitter = rng.normal(0, 0.12, (int(found.sum()), 4))
        w, h = 2 * rb[found] * (1 + jitter[:, 2]), 2 * ra[found] * (1 + jitter[:, 3])
        hits = np.column_stack([cx[found] - w / 2 + jitter[:, 0] * w,
                                cy[found] - h / 2 + jitter[:, 1] * h, w, h,
                                rng.uniform(0.5, 1.0, len(w))])
        n_rest = max(n_dets - len(hits), 0)
        side = rng.uniform(15, 120, n_rest)
        rest = np.column_stack([rng.uniform(-20, width, n_rest), rng.uniform(-20, height, n_rest),
                                side, side * rng.uniform(1, 1.4, n_rest),
                                rng.uniform(0, 0.8, n_rest) ** 2])
        dets = np.vstack([hits, rest])
        dets[:, 4] = np.round(dets[:, 4], 4)  # detectors' scores tie now and then
        detections[name] = dets
        sizes[name] = (width, height)
    return annotations, detections, sizes


def run_fddbeval(annotations, detections, sizes) -> tuple[float, FDDBEval]:
    start = time.perf_counter()
    ev = FDDBEval(annotations, detections, sizes, kind="rect")
    ev.summarize()
    return time.perf_counter() - start, ev


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=100,
                        help="images for the side-by-side run with the reference")
    args = parser.parse_args(argv)

    annotations, detections, sizes = synthesize(args.seed)
    n_dets = sum(len(d) for d in detections.values())
    seconds, ev = run_fddbeval(annotations, detections, sizes)
    metrics = ev.summarize()
    print(f"FDDB-sized synthetic set: {len(annotations)} images, {ev.n_faces} faces, "
          f"{n_dets} rectangle detections, {len(ev.disc.thresholds)} distinct scores")
    print(f"FDDBEval end to end: {seconds:.2f} s  "
          f"(tpr_disc@1000 {metrics['tpr_disc@1000']:.4f}, "
          f"tpr_cont@1000 {metrics['tpr_cont@1000']:.4f})")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_fddb_eval import reference_roc

    names = list(annotations)[:args.subset]
    sub = [{n: part[n] for n in names} for part in (annotations, detections, sizes)]
    fast, sub_ev = run_fddbeval(*sub)
    start = time.perf_counter()
    thresholds, tp_disc, fp, tp_cont, n = reference_roc(*sub, "rect")
    slow = time.perf_counter() - start
    same = (np.array_equal(sub_ev.disc.thresholds, thresholds)
            and np.array_equal(sub_ev.disc.false_positives, fp)
            and np.array_equal(sub_ev.disc.tpr, tp_disc / n)
            and np.allclose(sub_ev.cont.tpr * n, tp_cont, rtol=0, atol=1e-9))
    print(f"first {len(names)} images ({len(thresholds)} distinct scores): reference "
          f"{slow:.2f} s, FDDBEval {fast:.3f} s, ratio {slow / fast:.0f}x; "
          f"results {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
