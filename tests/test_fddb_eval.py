"""FDDB's official ROC: hand-computed cases, properties, a loop-by-loop reference written from the
protocol text and compared on random cases, the file formats, and `bench eval fddb`."""

import argparse
import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from bench.errors import UserError
from bench.evals import fddb_cli
from bench.evals.fddb import (
    FDDBEval,
    image_sizes_from_dir,
    match_per_threshold,
    pixel_iou,
    read_ellipse_annotations,
    read_fddb_detections,
    read_fddb_folds,
    read_fold_list,
    read_image_sizes,
    roc_counts,
    tpr_of_counts,
    write_fddb_detections,
)

# ----------------------------------------------------------------------------------------------
# The reference: the protocol text, loop by loop, one full-size mask per region and pair.


def cv_round(v: float) -> int:
    """A coordinate as the official tool rounds it: to float32, then half to even (cvRound)."""
    return round(float(np.float32(v)))


def region_mask(region, kind: str, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    if kind == "ellipse":
        ra, rb, angle, cx, cy = region[:5]
        cv2.ellipse(mask, (cv_round(cx), cv_round(cy)), (int(ra), int(rb)), math.degrees(angle),
                    0, 360, 1, -1)
    else:
        left, top, w, h = region[:4]
        cv2.rectangle(mask, (cv_round(left), cv_round(top)),
                      (cv_round(left + w), cv_round(top + h)), 1, -1)
    return mask > 0


def reference_match(iou: list[list[float]], kept: list[int]) -> list[float]:
    """IoUs of the matched pairs: maximum total over the kept detections, rows and columns
    without any overlap left out (as the official code does before its Hungarian solver)."""
    cols = [j for j in kept if any(row[j] > 0 for row in iou)]
    rows = [i for i in range(len(iou)) if any(iou[i][j] > 0 for j in cols)]
    if not rows:
        return []
    sub = np.array([[iou[i][j] for j in cols] for i in rows])
    r, c = linear_sum_assignment(sub, maximize=True)
    return [float(sub[a, b]) for a, b in zip(r, c, strict=True) if sub[a, b] > 0]


def reference_roc(annotations, detections, sizes, kind):
    """(thresholds, tp_disc, fp, tp_cont, n_faces): for each distinct score s, every image's
    detections cut to score >= s, matched anew, and the counts summed over images."""
    ious = {}
    for name, faces in annotations.items():
        width, height = sizes[name]
        dets = detections.get(name, [])
        ious[name] = []
        for face in faces:
            a = region_mask(face, "ellipse", width, height)
            row = []
            for det in dets:
                d = region_mask(det, kind, width, height)
                union = np.count_nonzero(a | d)
                row.append(np.count_nonzero(a & d) / union if union else 0.0)
            ious[name].append(row)
    scores = sorted({float(d[-1]) for dets in detections.values() for d in dets})
    tp_discs, fps, tp_conts = [], [], []
    for s in scores:
        tp_disc = fp = 0
        tp_cont = 0.0
        for name in annotations:
            dets = detections.get(name, [])
            kept = [j for j in range(len(dets)) if dets[j][-1] >= s]
            matched = reference_match(ious[name], kept)
            disc = sum(1 for v in matched if v > 0.5)
            tp_disc += disc
            tp_cont += sum(matched)
            fp += len(kept) - disc
        tp_discs.append(tp_disc)
        fps.append(fp)
        tp_conts.append(tp_cont)
    n_faces = sum(len(f) for f in annotations.values())
    return np.array(scores), np.array(tp_discs), np.array(fps), np.array(tp_conts), n_faces


def random_case(rng: np.random.Generator, kind: str):
    """A few small images with faces near and across the border, detections jittered from the
    faces or anywhere, scores drawn from a short list (ties) or a normal law (negatives)."""
    annotations, detections, sizes = {}, {}, {}
    for i in range(int(rng.integers(1, 4))):
        name = f"2002/08/11/big/img_{i}"
        width, height = int(rng.integers(12, 44)), int(rng.integers(12, 44))
        faces = []
        for _ in range(int(rng.integers(0, 4))):
            rb = rng.uniform(0.5, 9)
            faces.append([rb * rng.uniform(1, 1.6), rb, rng.uniform(-np.pi, np.pi),
                          rng.uniform(-4, width + 4), rng.uniform(-4, height + 4)])
        if faces and rng.random() < 0.3:  # exact halves exercise the rounding
            faces[0][3] = math.floor(faces[0][3]) + 0.5
        dets = []
        for _ in range(int(rng.integers(0, 6))):
            j = rng.normal(0, 1.5, 4)
            if faces and rng.random() < 0.6:
                ra, rb, angle, cx, cy = faces[int(rng.integers(len(faces)))]
                if kind == "rect":
                    det = [cx - rb + j[0], cy - ra + j[1], max(0, 2 * rb + j[2]),
                           max(0, 2 * ra + j[3])]
                else:
                    det = [max(0, ra + j[2]), max(0, rb + j[3]), angle + rng.normal(0, 0.3),
                           cx + j[0], cy + j[1]]
            elif kind == "rect":
                det = [rng.uniform(-8, width), rng.uniform(-8, height), rng.uniform(0, 15),
                       rng.uniform(0, 15)]
            else:
                det = [rng.uniform(0, 9), rng.uniform(0, 9), rng.uniform(-np.pi, np.pi),
                       rng.uniform(-4, width + 4), rng.uniform(-4, height + 4)]
            if rng.random() < 0.5:
                score = float(rng.choice([-1.0, 0.0, 0.25, 0.5, 1.0]))
            else:
                score = round(float(rng.normal()), 3)
            dets.append([*det, score])
        annotations[name] = np.array(faces).reshape(-1, 5)
        if dets or rng.random() < 0.5:  # an image may be absent from the detections
            detections[name] = np.array(dets).reshape(-1, 5 if kind == "rect" else 6)
        sizes[name] = (width, height)
    return annotations, detections, sizes


# ----------------------------------------------------------------------------------------------
# Hand-computed cases. seg() is a flat ellipse (minor axis 0): OpenCV fills it as one row of
# 2 * radius + 1 pixels, so overlaps with one-row rectangles can be counted by hand.


def seg(x0: int, x1: int, y: int) -> list[float]:
    """The flat ellipse covering pixels x0..x1 of row y (x1 - x0 even)."""
    return [(x1 - x0) / 2, 0, 0, (x0 + x1) / 2, y]


def row_rect(x0: int, x1: int, y: int, score: float, rows: int = 1) -> list[float]:
    """The rectangle covering pixels x0..x1 of rows y..y + rows - 1."""
    return [x0, y, x1 - x0, rows - 1, score]


def one_image(faces, dets, size=(40, 20), kind="rect") -> FDDBEval:
    ev = FDDBEval({"img": faces}, {"img": dets}, {"img": size}, kind=kind)
    ev.accumulate()
    return ev


def test_flat_ellipse_and_rectangle_cover_the_same_pixels():
    mask = region_mask(seg(5, 15, 5), "ellipse", 40, 20)
    assert np.array_equal(np.argwhere(mask), [[5, x] for x in range(5, 16)])
    assert pixel_iou([seg(5, 15, 5)], [row_rect(5, 15, 5, 1)], "rect", (40, 20))[0, 0] == 1
    # the angle is in radians: a quarter turn makes the segment a column
    upright = [5, 0, math.pi / 2, 10, 10]
    assert pixel_iou([upright], [[10, 5, 0, 10, 1]], "rect", (40, 20))[0, 0] == 1
    assert pixel_iou([upright], [row_rect(5, 15, 10, 1)], "rect", (40, 20))[0, 0] == 1 / 21


def test_rectangle_on_an_ellipse_bounding_box_scores_the_ellipse_pixel_share():
    face = [20, 10, 0, 50, 40]
    mask = region_mask(face, "ellipse", 100, 80)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (30, 70, 30, 50)
    box = [30, 30, 40, 20, 1.0]  # corners (30, 30) and (70, 50), both inclusive: 41 x 21 pixels
    iou = pixel_iou([face], [box], "rect", (100, 80))[0, 0]
    assert iou == np.count_nonzero(mask) / (41 * 21)
    # pixels of an ellipse reach half a pixel past its axes: about pi/4 of its box, where the
    # geometric ratio pi * 20 * 10 / (40 * 20) of a pure-geometry IoU is the same but the box
    # holds (2a + 1) (2b + 1) pixels; mixing the two conventions is off by 5 points
    assert abs(iou - math.pi / 4) < 0.005
    assert abs(iou - math.pi * 20 * 10 / (41 * 21)) > 0.05
    ev = one_image([face], [box], size=(100, 80))
    assert ev.disc.tpr.tolist() == [1.0] and ev.cont.tpr.tolist() == [iou]


def test_discrete_needs_an_iou_strictly_above_one_half():
    # 11 face pixels inside a 2-row rectangle of 22: IoU exactly 0.5
    ev = one_image([seg(5, 15, 5)], [row_rect(5, 15, 5, 0.7, rows=2)])
    assert ev.disc.tpr.tolist() == [0.0]
    assert ev.cont.tpr.tolist() == [0.5]
    assert ev.disc.false_positives.tolist() == [1.0]
    # one pixel fewer in the rectangle: 10 of 11 face pixels, IoU 10/11, a true positive
    ev = one_image([seg(5, 15, 5)], [row_rect(6, 15, 5, 0.7)])
    assert ev.disc.tpr.tolist() == [1.0] and ev.cont.tpr.tolist() == [10 / 11]


def test_continuous_sums_every_matched_pair_and_fp_counts_the_rest():
    faces = [seg(5, 15, 5), seg(25, 35, 12)]
    dets = [row_rect(5, 15, 5, 0.9), row_rect(25, 28, 12, 0.8)]  # IoU 1 and 4/11
    ev = one_image(faces, dets)
    assert ev.disc.thresholds.tolist() == [0.8, 0.9]  # ascending, as DiscROC.txt
    assert ev.disc.tpr.tolist() == [0.5, 0.5]
    assert ev.cont.tpr.tolist() == pytest.approx([(1 + 4 / 11) / 2, 0.5], abs=1e-15)
    assert ev.disc.false_positives.tolist() == [1.0, 0.0]


def test_matching_maximises_the_total_not_the_greedy_choice():
    faces = [seg(10, 20, 5), seg(21, 31, 5)]  # A, B: 11 pixels each
    d1 = row_rect(12, 24, 5, 0.9)  # 13 pixels: 9 in A (IoU 9/15), 4 in B (IoU 4/20)
    d2 = row_rect(10, 15, 5, 0.8)  # 6 pixels, all in A (IoU 6/11)
    ev = one_image(faces, [d1, d2])
    iou = ev.results[0].iou
    assert iou.tolist() == [[9 / 15, 6 / 11], [4 / 20, 0]]
    # greedy (A-d1, then nothing for B) would total 0.6; the optimum A-d2 + B-d1 totals 0.745
    assert ev.cont.tpr.tolist() == pytest.approx([(6 / 11 + 4 / 20) / 2, 0.6 / 2], abs=1e-15)
    assert ev.disc.tpr.tolist() == [0.5, 0.5]
    assert ev.disc.false_positives.tolist() == [1.0, 0.0]


def test_matching_is_solved_again_at_each_threshold():
    # d1 alone goes to A (6/11 > 1/2); with d2 kept the optimum is A-d2 (1/11) + B-d1 (1/2),
    # so the discrete count FALLS as the threshold drops, as in the official program
    faces = [seg(10, 20, 5), seg(11, 19, 5)]
    ev = one_image(faces, [row_rect(10, 15, 5, 0.9), row_rect(10, 10, 5, 0.8)])
    assert ev.disc.tpr.tolist() == [0.0, 0.5]
    assert ev.disc.false_positives.tolist() == [2.0, 0.0]
    assert ev.cont.tpr.tolist() == pytest.approx([(1 / 11 + 1 / 2) / 2, (6 / 11) / 2], abs=1e-15)
    # the reading is the best TPR with FP <= the limit, not the last point's
    assert ev.summarize(fp_limit=1000) == pytest.approx(
        {"tpr_disc@1000": 0.5, "tpr_cont@1000": (1 / 11 + 0.5) / 2}, abs=1e-15)
    assert ev.summarize(fp_limit=1)["tpr_cont@1"] == (6 / 11) / 2


def test_regions_are_clipped_to_the_image():
    face = seg(-3, 7, 0)  # 11 pixels, of which x 0..7 (8) lie inside
    ev = one_image([face], [[-6, -4, 13, 4, 1.0]], size=(20, 10))  # in the image: x 0..7, y 0
    assert ev.results[0].iou.tolist() == [[1.0]]
    assert ev.disc.tpr.tolist() == [1.0]
    # a face centred outside keeps only its inside part: x 0..1 of -9..1
    assert pixel_iou([seg(-9, 1, 0)], [[-2, 0, 3, 0, 1.0]], "rect", (20, 10)).tolist() == [[1.0]]
    # and so does an ellipse detection
    assert pixel_iou([face], [[*seg(-5, 7, 0), 1.0]], "ellipse", (20, 10)).tolist() == [[1.0]]
    # a detection wholly outside overlaps nothing, and two empty masks score 0, not NaN
    assert pixel_iou([face], [[30, 30, 5, 5, 1.0]], "rect", (20, 10)).tolist() == [[0.0]]
    assert pixel_iou([[3, 3, 0, -20, -20]], [[-20, -20, 5, 5, 1.0]], "rect", (20, 10)).tolist() \
        == [[0.0]]


def test_coordinates_round_half_to_even_through_float32():
    face = [seg(2, 12, 5)]
    size = (40, 20)
    assert pixel_iou(face, [[2.5, 5, 10, 0, 1]], "rect", size)[0, 0] == 1  # 2.5 -> 2, 12.5 -> 12
    assert pixel_iou(face, [[3.5, 5, 9, 0, 1]], "rect", size)[0, 0] == 9 / 11  # 4..12 (12.5)
    # 2.5000001 is 2.5 in float32, so it still rounds to 2
    assert pixel_iou(face, [[2.5000001, 5, 10, 0, 1]], "rect", size)[0, 0] == 1


def test_images_without_detections_or_faces():
    annotations = {"faces_only": [seg(2, 6, 2), seg(2, 6, 4)], "empty": [],
                   "hit": [seg(2, 6, 2)], "stray": []}
    detections = {"hit": [row_rect(2, 6, 2, 0.7)], "stray": [[1, 1, 3, 3, 0.4]], "empty": []}
    sizes = dict.fromkeys(annotations, (10, 10))
    ev = FDDBEval(annotations, detections, sizes)
    disc, cont = ev.accumulate()
    assert ev.n_faces == 3
    assert disc.thresholds.tolist() == [0.4, 0.7]
    assert disc.tpr.tolist() == [1 / 3, 1 / 3]
    assert disc.false_positives.tolist() == [1.0, 0.0]
    assert cont.tpr.tolist() == pytest.approx([1 / 3, 1 / 3], abs=1e-15)


def test_tied_scores_make_one_point_within_and_across_images():
    annotations = {"a": [seg(2, 6, 2)], "b": [seg(2, 6, 2)]}
    detections = {"a": [row_rect(2, 6, 2, 0.5), [20, 20, 3, 3, 0.5], [20, 1, 3, 3, 0.2]],
                  "b": [row_rect(2, 6, 2, 0.5)]}
    ev = FDDBEval(annotations, detections, dict.fromkeys(annotations, (30, 30)))
    disc, _ = ev.accumulate()
    assert disc.thresholds.tolist() == [0.2, 0.5]
    assert disc.tpr.tolist() == [1.0, 1.0]
    assert disc.false_positives.tolist() == [2.0, 1.0]


def test_rectangle_masks_are_opencv_filled_rectangles():
    """Rectangles are scored by their box; against a face covering the whole image the IoU is
    the share of the image that cv2.rectangle(thickness=-1) fills."""
    rng = np.random.default_rng(5)
    width, height = 37, 23
    cover = [[200, 200, 0, 18, 11]]
    assert region_mask(cover[0], "ellipse", width, height).all()
    rects = np.column_stack([rng.uniform(-60, 60, (400, 2)), rng.uniform(0, 70, (400, 2)),
                             np.ones(400)])
    half = rng.random(400) < 0.2  # exact halves: rounding to even
    rects[half, :2] = np.round(rects[half, :2]) + 0.5
    rects[:20, :2] = rng.choice([-1e7, 1e7], (20, 2))  # far off: clipped, never overflowing
    ious = pixel_iou(cover, rects, "rect", (width, height))[0]
    expected = [np.count_nonzero(region_mask(r, "rect", width, height)) / (width * height)
                for r in rects]
    assert ious.tolist() == expected


# ----------------------------------------------------------------------------------------------
# Properties and the reference.


def random_faces_inside(rng, n_images=30):
    annotations, sizes = {}, {}
    for i in range(n_images):
        width, height = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        faces = [[rng.uniform(4, 12), rng.uniform(3, 8), rng.uniform(-np.pi, np.pi),
                  rng.uniform(12, width - 12), rng.uniform(12, height - 12)]
                 for _ in range(int(rng.integers(0, 4)))]
        annotations[f"img_{i}"] = np.array(faces).reshape(-1, 5)
        sizes[f"img_{i}"] = (width, height)
    return annotations, sizes


def test_perfect_ellipse_detections_give_tpr_one_without_false_positives():
    rng = np.random.default_rng(3)
    annotations, sizes = random_faces_inside(rng)
    detections = {n: np.column_stack([f, rng.uniform(0, 1, len(f))])
                  for n, f in annotations.items()}
    ev = FDDBEval(annotations, detections, sizes, kind="ellipse")
    disc, cont = ev.accumulate()
    assert ev.n_faces > 30
    assert disc.tpr[0] == 1.0 and cont.tpr[0] == 1.0
    assert not disc.false_positives.any()
    assert ev.summarize() == {"tpr_disc@1000": 1.0, "tpr_cont@1000": 1.0}


@pytest.mark.parametrize("kind", ["rect", "ellipse"])
def test_permuting_detection_lines_changes_nothing(kind):
    rng = np.random.default_rng(11)
    for _ in range(20):
        annotations, detections, sizes = random_case(rng, kind)
        shuffled = {n: d[rng.permutation(len(d))] for n, d in detections.items()}
        a = FDDBEval(annotations, detections, sizes, kind=kind).accumulate()
        b = FDDBEval(annotations, shuffled, sizes, kind=kind).accumulate()
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x.thresholds, y.thresholds)
            assert np.array_equal(x.false_positives, y.false_positives)
            np.testing.assert_allclose(x.tpr, y.tpr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["rect", "ellipse"])
def test_agrees_with_the_loop_by_loop_reference(kind):
    rng = np.random.default_rng({"rect": 1, "ellipse": 2}[kind])
    matched_somewhere = 0
    for case in range(150):
        annotations, detections, sizes = random_case(rng, kind)
        thresholds, tp_disc, fp, tp_cont, n = reference_roc(annotations, detections, sizes, kind)
        disc, cont = FDDBEval(annotations, detections, sizes, kind=kind).accumulate()
        where = f"case {case}"
        assert disc.thresholds.tolist() == thresholds.tolist(), where
        assert disc.false_positives.tolist() == fp.tolist(), where
        assert disc.tpr.tolist() == (tp_disc / n if n else 0 * tp_disc).tolist(), where
        np.testing.assert_allclose(cont.tpr * n, tp_cont, rtol=0, atol=1e-9, err_msg=where)
        matched_somewhere += bool(tp_disc.any())
    assert matched_somewhere > 50  # the cases exercise matches, not just misses


ROW_FIELDS = ("faces", "width", "levels", "kept", "tp_disc", "tp_cont")


def row_counts(rows: list[dict]) -> np.ndarray:
    """Per-image rows as the numbers a paired test resamples, an image a row."""
    return np.stack([roc_counts([r[f] for f in ROW_FIELDS]) for r in rows])


@pytest.mark.parametrize("kind", ["rect", "ellipse"])
def test_image_rows_give_each_images_share_and_a_resample_its_official_roc(kind):
    """The rows paired tests resample: each image's own counts at its own scores; all of them
    give the ROC's readings, and any multiset of images (a bootstrap draw) gives exactly the
    readings of the official ROC computed on that multiset, its images repeated."""
    rng = np.random.default_rng({"rect": 5, "ellipse": 6}[kind])
    for case in range(100):
        annotations, detections, sizes = random_case(rng, kind)
        ev = FDDBEval(annotations, detections, sizes, kind=kind)
        ev.accumulate()
        rows = ev.image_rows()
        assert ev.results is not None and [r["image"] for r in rows] == list(annotations)
        for row, result in zip(rows, ev.results, strict=True):
            assert row["faces"] == result.n_faces and row["width"] == len(ev.levels)
            assert ev.levels[row["levels"]].tolist() == result.thresholds.tolist()
            assert row["tp_disc"] == result.tp_disc.tolist()
        counts = row_counts(rows)
        drawn = rng.integers(0, len(rows), len(rows))
        names = list(annotations)
        copies = {f"{names[i]}#{j}": names[i] for j, i in enumerate(drawn)}
        again = FDDBEval({c: annotations[n] for c, n in copies.items()},
                         {c: detections[n] for c, n in copies.items() if n in detections},
                         {c: sizes[n] for c, n in copies.items()}, kind=kind)
        for fp_limit in (0, 1, 3, 1000):
            whole, resampled = ev.summarize(fp_limit), again.summarize(fp_limit)
            for key, continuous in zip(whole, (False, True), strict=True):
                where = f"case {case}, {key}"
                assert tpr_of_counts(counts, continuous, fp_limit) == pytest.approx(
                    whole[key], abs=1e-12), where
                assert tpr_of_counts(counts[drawn], continuous, fp_limit) == pytest.approx(
                    resampled[key], abs=1e-12), where
            assert tpr_of_counts(counts, False, fp_limit) == whole[f"tpr_disc@{fp_limit}"]


@pytest.mark.parametrize("values", [
    [True, 2, [], [], [], []], [1, -1, [], [], [], []], [1, 2, [2], [1], [1], [0.5]],
    [1, 2, [1, 0], [2, 1], [1, 0], [1, 0]], [1, 2, [0], [1, 2], [1], [1]],
    [1, 2, [0], [1], [1], [float("nan")]], [1, 2, [0.5], [1], [1], [1]],
    [1, 2, (0,), [1], [1], [1]]])
def test_a_row_that_is_not_an_images_roc_counts_is_refused(values):
    with pytest.raises((TypeError, ValueError)):
        roc_counts(values)


def test_assignment_reaches_the_brute_force_optimum():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n_faces, n_dets = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        iou = rng.uniform(0, 1, (n_faces, n_dets)) * (rng.random((n_faces, n_dets)) < 0.6)
        _, kept, _, tp_cont = match_per_threshold(iou, np.zeros(n_dets))
        best = max(sum(iou[i, j] for i, j in zip(rows, cols, strict=False))
                   for rows in itertools.permutations(range(n_faces))
                   for cols in itertools.permutations(range(n_dets)))
        assert kept.tolist() == [n_dets]
        assert tp_cont[0] == pytest.approx(best, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Files.

ELLIPSES = """2002/08/11/big/img_591
1
123.583300 85.549500 1.265839 269.693400 161.781200  1
2002/08/26/big/img_265
3
67.363819 44.511485 -1.476417 105.249970 87.209036  1
41.936870 27.064477 1.471906 184.070915 129.345601  1
70.993052 43.355200 1.370217 340.894300 117.498951  1
"""


def test_read_ellipse_annotations_and_fold_list(tmp_path):
    (tmp_path / "e.txt").write_text(ELLIPSES)
    (tmp_path / "l.txt").write_text("2002/08/11/big/img_591\n2002/08/26/big/img_265\n")
    names = read_fold_list(tmp_path / "l.txt")
    faces = read_ellipse_annotations(tmp_path / "e.txt", names)
    assert list(faces) == names
    assert faces["2002/08/11/big/img_591"].tolist() == [[123.5833, 85.5495, 1.265839, 269.6934,
                                                        161.7812]]
    assert faces["2002/08/26/big/img_265"].shape == (3, 5)
    (tmp_path / "l2.txt").write_text("2002/08/26/big/img_265\n2002/08/11/big/img_591\n")
    with pytest.raises(UserError, match=r"e\.txt, line 1: image '2002/08/11/big/img_591' where"):
        read_ellipse_annotations(tmp_path / "e.txt", read_fold_list(tmp_path / "l2.txt"))


def write_folds(folder: Path, folds: dict[int, dict[str, list]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fold, faces in folds.items():
        (folder / f"FDDB-fold-{fold:02d}.txt").write_text("".join(f"{n}\n" for n in faces))
        text = "".join(f"{n}\n{len(f)}\n" + "".join(" ".join(map(str, e)) + "  1\n" for e in f)
                       for n, f in faces.items())
        (folder / f"FDDB-fold-{fold:02d}-ellipseList.txt").write_text(text)


def test_read_fddb_folds_in_the_order_asked(tmp_path):
    write_folds(tmp_path, {1: {"a": [seg(2, 6, 2)]}, 2: {"b": [], "c": [seg(2, 6, 2)] * 2}})
    assert list(read_fddb_folds(tmp_path, [2, 1])) == ["b", "c", "a"]
    with pytest.raises(UserError, match=r"FDDB-fold-03\.txt: file not found"):
        read_fddb_folds(tmp_path, [3])
    with pytest.raises(UserError, match="fold 11: FDDB has folds 1 to 10"):
        read_fddb_folds(tmp_path, [11])
    with pytest.raises(UserError, match="also in an earlier fold"):
        read_fddb_folds(tmp_path, [1, 1])


NAMES = ["img_a", "img_b"]
GOOD = "img_a\n2\n1 2 3 4 0.5\n5 6 7 8 0.25\nimg_b\n0\n"


@pytest.mark.parametrize(("text", "message"), [
    ("img_a\n2\n1 2 3 4 0.5\n5 6 7 8\nimg_b\n0\n",
     r"line 4: expected 5 numbers \(left top width height score\), got 4: '5 6 7 8'"),
    ("img_a\n2\n1 2 3 4 0.5\nimg_b\n0\n",
     r"line 4: the count on line 2 announces 2 detections for image 'img_a', but 1 follow"),
    ("img_a\n1\n1 2 3 4 0.5\n5 6 7 8 0.25\nimg_b\n0\n",
     r"line 4: expected an image name, got a line of 5 numbers: the count on line 2"),
    ("img_a\n1\n1 2 3 4 nan\nimg_b\n0\n", r"line 3: score is nan; expected a finite number"),
    ("img_a\n1\n1 2 3 4 inf\nimg_b\n0\n", r"line 3: score is inf; expected a finite number"),
    ("img_a\n1\n1 2 -3 4 0.5\nimg_b\n0\n", r"line 3: width is -3; expected a number >= 0"),
    ("img_a\n1\n1 2 3 x 0.5\nimg_b\n0\n", r"line 3: height is 'x'; expected a number"),
    ("img_a\ntwo\n", r"line 2: expected the number of detections of image 'img_a'"),
    ("img_a\n-1\n", r"line 2: expected the number of detections .* got '-1'"),
    ("img_a\n3\n1 2 3 4 0.5\n", r"line 4: the count on line 2 announces 3 detections"),
    ("img_a\n", r"line 2: the file ends after image 'img_a'"),
    ("img_b\n0\nimg_a\n0\n", r"line 1: image 'img_b' where the image list has 'img_a'"),
    ("img_a\n0\n", r"holds 1 images where the image list has 2; the next expected is 'img_b'"),
    (GOOD + "img_c\n0\n", r"line 7: image 'img_c' comes after the 2 images of the image list"),
])
def test_detection_file_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "dets.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=r"dets\.txt.*" + message):
        read_fddb_detections(path, "rect", NAMES)


def test_detection_file_reading(tmp_path):
    path = tmp_path / "dets.txt"
    path.write_text("img_a.jpg\n2\n1 2 3 4 0.5\n  5 6 7 8 -2.25 \n\nimg_b\n0\n\n")
    dets = read_fddb_detections(path, "rect", NAMES)  # the official check: name contained
    assert list(dets) == NAMES
    assert dets["img_a"].tolist() == [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, -2.25]]
    assert dets["img_b"].shape == (0, 5)
    assert list(read_fddb_detections(path, "rect")) == ["img_a.jpg", "img_b"]
    with pytest.raises(UserError, match=r"line 3: expected 6 numbers \(major_axis_radius"):
        read_fddb_detections(path, "ellipse")
    with pytest.raises(UserError, match="detection kind 'box'"):
        read_fddb_detections(path, "box")
    with pytest.raises(UserError, match=r"missing\.txt: file not found"):
        read_fddb_detections(tmp_path / "missing.txt")


@pytest.mark.parametrize("kind", ["rect", "ellipse"])
def test_writer_round_trip(tmp_path, kind):
    rng = np.random.default_rng(0)
    width = 5 if kind == "rect" else 6
    dets = {f"2002/07/{i:02d}/big/img_{i}": rng.uniform(0, 300, (i % 4, width)) / 7
            for i in range(12)}
    path = tmp_path / "out" / "dets.txt"
    write_fddb_detections(path, dets, kind)
    back = read_fddb_detections(path, kind, list(dets))
    assert list(back) == list(dets)
    for name, rows in dets.items():
        assert np.array_equal(back[name], rows.reshape(-1, width))  # bit for bit
    with pytest.raises(UserError, match="expected rows of"):
        write_fddb_detections(path, {"x": [[1, 2, 3]]}, kind)


def test_image_sizes_from_a_file_or_the_images(tmp_path):
    (tmp_path / "sizes.txt").write_text("2002/08/11/big/img_591 450 338\nimg_b 20 30\n")
    assert read_image_sizes(tmp_path / "sizes.txt") == {"2002/08/11/big/img_591": (450, 338),
                                                        "img_b": (20, 30)}
    (tmp_path / "bad.txt").write_text("img_a 450 338\nimg_b 20\n")
    with pytest.raises(UserError, match=r"bad\.txt, line 2: expected 'name width height'"):
        read_image_sizes(tmp_path / "bad.txt")
    image = tmp_path / "originalPics" / "2002" / "08" / "img_1.jpg"
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), np.full((31, 47, 3), 128, np.uint8))
    assert image_sizes_from_dir(tmp_path / "originalPics", ["2002/08/img_1"]) == {
        "2002/08/img_1": (47, 31)}
    with pytest.raises(UserError, match=r"img_2\.jpg: image missing"):
        image_sizes_from_dir(tmp_path / "originalPics", ["2002/08/img_2"])


def test_evaluator_input_checks():
    faces = {"a": [seg(2, 6, 2)], "b": []}
    with pytest.raises(UserError, match=r"no image size for 1 evaluated images, e\.g\. 'b'"):
        FDDBEval(faces, {}, {"a": (10, 10)})
    with pytest.raises(UserError, match=r"have no annotations, e\.g\. 'c'"):
        FDDBEval(faces, {"c": [[1, 1, 2, 2, 0.5]]}, dict.fromkeys("ab", (10, 10)))
    with pytest.raises(UserError, match=r"detections of image 'a': expected rows of 5 numbers"):
        FDDBEval(faces, {"a": [[1, 1, 2, 0.5]]}, dict.fromkeys("ab", (10, 10)))
    # choosing images (some folds) ignores the others' detections
    ev = FDDBEval(faces, {"a": [row_rect(2, 6, 2, 1.0)], "b": [[1, 1, 2, 2, 0.5]]},
                  {"a": (10, 10)}, images=["a"])
    assert ev.summarize() == {"tpr_disc@1000": 1.0, "tpr_cont@1000": 1.0}


# ----------------------------------------------------------------------------------------------
# The command.


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench eval")
    fddb_cli.add_parser(parser.add_subparsers(dest="evaluator", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def fddb_files(tmp_path):
    rng = np.random.default_rng(8)
    annotations, sizes = random_faces_inside(rng, n_images=8)
    names = list(annotations)
    folds = {1: {n: annotations[n].tolist() for n in names[:5]},
             2: {n: annotations[n].tolist() for n in names[5:]}}
    write_folds(tmp_path / "FDDB-folds", folds)
    dets = {}
    for n, faces in annotations.items():
        ra, rb, cx, cy = (faces[:, i] for i in (0, 1, 3, 4))
        boxes = np.column_stack([cx - rb, cy - ra, 2 * rb, 2 * ra, rng.uniform(0, 1, len(faces))])
        noise = np.column_stack([rng.uniform(0, 40, (3, 2)), rng.uniform(5, 20, (3, 2)),
                                 rng.uniform(0, 1, 3)])
        dets[n] = np.vstack([boxes, noise])
    write_fddb_detections(tmp_path / "dets.txt", dets)
    write_fddb_detections(tmp_path / "dets2.txt", {n: dets[n] for n in names[5:]})
    (tmp_path / "sizes.txt").write_text("".join(f"{n} {w} {h}\n" for n, (w, h) in sizes.items()))
    return tmp_path, annotations, dets, sizes


def test_cli_prints_writes_json_and_plots(fddb_files, capsys):
    root, annotations, dets, sizes = fddb_files
    code = cli(["fddb", "--folds", str(root / "FDDB-folds"), "--dets", str(root / "dets.txt"),
                "--sizes", str(root / "sizes.txt"), "--folds-used", "1", "2", "--fp", "5",
                "--json", str(root / "m.json"), "--plot", str(root / "roc.svg")])
    assert code == 0
    ev = FDDBEval(annotations, dets, sizes)
    expected = ev.summarize(5)
    out = capsys.readouterr().out
    assert f"fddb.tpr_disc@5 = {expected['tpr_disc@5']:.6g}" in out
    assert f"fddb.n_faces = {ev.n_faces}" in out
    data = json.loads((root / "m.json").read_text())
    assert data["metrics"] == expected
    assert data["folds"] == [1, 2] and data["kind"] == "rect"
    assert [c["name"] for c in data["curves"]] == ["FDDB discrete", "FDDB continuous"]
    assert data["curves"][0]["tpr"] == ev.disc.tpr.tolist()
    assert (root / "roc.svg").read_text().lstrip().startswith("<?xml")


def test_cli_fold_subset_and_errors(fddb_files, capsys):
    root, annotations, dets, sizes = fddb_files
    base = ["fddb", "--folds", str(root / "FDDB-folds"), "--sizes", str(root / "sizes.txt")]
    assert cli([*base, "--dets", str(root / "dets2.txt"), "--folds-used", "2"]) == 0
    names = list(annotations)[5:]
    expected = FDDBEval({n: annotations[n] for n in names}, dets, sizes, images=names).summarize()
    assert f"fddb.tpr_cont@1000 = {expected['tpr_cont@1000']:.6g}" in capsys.readouterr().out
    # the all-folds file does not follow fold 2 alone
    with pytest.raises(UserError, match=r"dets\.txt, line 1: image 'img_0' where"):
        cli([*base, "--dets", str(root / "dets.txt"), "--folds-used", "2"])
    with pytest.raises(UserError, match="a fold is repeated"):
        cli([*base, "--dets", str(root / "dets.txt"), "--folds-used", "1", "1"])
    (root / "few.txt").write_text("img_0 50 50\n")
    with pytest.raises(UserError, match=r"few\.txt: no size for 7 evaluated images"):
        cli(["fddb", "--folds", str(root / "FDDB-folds"), "--sizes", str(root / "few.txt"),
             "--dets", str(root / "dets.txt"), "--folds-used", "1", "2"])
    with pytest.raises(SystemExit):
        cli([*base, "--dets", str(root / "dets.txt"), "--kind", "box"])
