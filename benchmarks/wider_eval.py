"""WIDER FACE evaluation speed: the vectorised WiderEval against a loop-by-loop transcription of the
official MATLAB tool (tests/support/wider_reference.py), on the real val ground truth with generated
predictions: jittered copies of most real faces plus random boxes, 100 to 1,000 per image, with a
fixed seed.

WiderEval scores all 3,226 images in all three settings; the transcription runs on every k-th
image (--reference-every, default 10) unless --reference-every 1, and its full-set time is
extrapolated by the number of predictions. Both score the subset too, and their APs must agree to
1e-9. The goal: all three settings in 5 s or less on 2 cores.

    python benchmarks/wider_eval.py [--gt DIR] [--seed 0] [--reference-every 10] [--repeats 3]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bench.evals.wider import SETTINGS, ImageKey, WiderEval, WiderGroundTruth, load_wider_mat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.shared_data import SHARED_DATA
from support.wider_reference import reference_wider

DEFAULT_GT = SHARED_DATA / "wider_val_gt"


def generate(gt: WiderGroundTruth, seed: int) -> dict[ImageKey, np.ndarray]:
    """Per image 100..1000 boxes: a jittered copy of most of its faces (scores mostly high), the
    rest random boxes of face-like sizes (scores mostly low)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, faces in gt.boxes.items():
        n = int(rng.integers(100, 1001))
        faces = faces[(faces[:, 2] > 0) & (faces[:, 3] > 0)]
        src = faces[rng.random(len(faces)) < 0.9][: n // 2]
        k = len(src)
        size = np.repeat(src[:, 2:].mean(axis=1, keepdims=True), 4, axis=1)
        jittered = src + rng.normal(0, 0.08, (k, 4)) * size
        side = np.exp(rng.uniform(np.log(4), np.log(300), (n - k, 1)))
        random = np.c_[rng.uniform(0, 1024, (n - k, 2)), side * rng.uniform(0.7, 1.3, (n - k, 2))]
        boxes = np.r_[jittered, random]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 0)
        scores = np.r_[rng.beta(6, 2, k), rng.beta(1.2, 12, n - k)]
        out[key] = np.c_[boxes, scores][rng.permutation(n)]
    return out


def subset(gt: WiderGroundTruth, every: int) -> WiderGroundTruth:
    keys = gt.images[::every]
    return WiderGroundTruth(gt.events, {k: gt.boxes[k] for k in keys},
                            {s: {k: gt.counted[s][k] for k in keys} for s in gt.counted})


def fast(gt: WiderGroundTruth, predictions: dict) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    metrics = WiderEval(gt, predictions, SETTINGS).summarize()
    return time.perf_counter() - start, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help="folder of the four .mat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-every", type=int, default=10,
                        help="the slow transcription scores every k-th image (1: all)")
    parser.add_argument("--repeats", type=int, default=3, help="WiderEval timings, best kept")
    args = parser.parse_args(argv)
    if not (args.gt / "wider_face_val.mat").is_file():
        print(f"WIDER val ground truth not found in {args.gt}; nothing to measure")
        return 0
    warnings.simplefilter("error")  # generated predictions must raise no coverage warning

    gt = load_wider_mat(args.gt)
    predictions = generate(gt, args.seed)
    n_pred = sum(len(p) for p in predictions.values())
    print(f"ground truth: {len(gt.boxes)} images, {sum(map(len, gt.boxes.values()))} boxes; "
          f"generated predictions: {n_pred} (seed {args.seed})")

    runs = [fast(gt, predictions) for _ in range(args.repeats)]
    full_time, full_metrics = min(runs, key=lambda r: r[0])
    print(f"WiderEval, all images, 3 settings: {full_time:.2f} s (best of {args.repeats}); AP "
          + " / ".join(f"{s} {full_metrics[s]:.4f}" for s in SETTINGS))

    part = subset(gt, args.reference_every)
    part_pred = {k: predictions[k] for k in part.boxes}
    n_part = sum(len(p) for p in part_pred.values())
    part_time, part_metrics = fast(part, part_pred)
    start = time.perf_counter()
    ref = reference_wider(part, part_pred, SETTINGS)
    ref_time = time.perf_counter() - start
    scale = n_pred / n_part
    label = ("all images" if args.reference_every == 1 else
             f"every {args.reference_every}th image: {len(part.boxes)} images, {n_part} "
             "predictions")
    print(f"subset ({label}):")
    print(f"  {'':<28}{'seconds':>10}{'easy':>10}{'medium':>10}{'hard':>10}")
    for name, seconds, metrics in (("WiderEval", part_time, part_metrics),
                                   ("loop-by-loop reference", ref_time,
                                    {s: ref[s]["ap"] for s in SETTINGS})):
        print(f"  {name:<28}{seconds:>10.2f}"
              + "".join(f"{metrics[s]:>10.6f}" for s in SETTINGS))
    gap = max(abs(part_metrics[s] - ref[s]["ap"]) for s in SETTINGS)
    print(f"  largest AP difference: {gap:.2e} ({'agree' if gap <= 1e-9 else 'DISAGREE'} "
          "to 1e-9)")
    est = ref_time * scale
    print(f"reference on all images: {'measured' if scale == 1 else 'estimated'} {est:.0f} s "
          f"({ref_time:.1f} s x {scale:.2f}, the ratio of predictions); "
          f"speed-up {est / full_time:.0f}x")
    print(f"goal: all three settings in <= 5 s: {'met' if full_time <= 5 else 'NOT met'}")
    return 0 if gap <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
