"""Pascal Faces with the face-eval toolbox's rules: every rule on hand-computed cases, a
loop-by-loop reference written from the protocol text, calibration, loaders, writers, the COCO
cross-check and the command line."""

import argparse
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from support.shared_data import SHARED_DATA

from bench.errors import UserError
from bench.evals import pascal_cli
from bench.evals.curves import ap_11_point
from bench.evals.pascal import (
    Detections,
    FaceGT,
    PascalFacesEval,
    coco_ap50,
    gt_from_mat,
    load_coco_dets,
    load_coco_gt,
    load_dets,
    load_gt,
    load_mat_gt,
    load_text_gt,
    load_toolbox_dets,
    overlap,
    write_coco_results,
    write_toolbox_dets,
)

METRICS = ("ap", "ap_11pt", "ap_plain", "ap_11pt_plain")


def run_eval(gt: dict, dets: list[tuple], nit: int = 1) -> PascalFacesEval:
    """Evaluate `dets` [(image, score, x1, y1, x2, y2)] on `gt` {image: rows}; warnings kept."""
    d = Detections([x[0] for x in dets], [x[1] for x in dets], [x[2:] for x in dets])
    ev = PascalFacesEval(FaceGT(gt), d, nit=nit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev.summarize()
    return ev


def flags(ev: PascalFacesEval, rnd: int = 0) -> list[str]:
    """Per detection in score order: 'tp', 'fp' or '-' (on an ignore region)."""
    r = ev.rounds[rnd]
    return ["tp" if t else "fp" if f else "-" for t, f in zip(r.tp, r.fp, strict=True)]


# ---- hand-computed cases, one per rule ---------------------------------------------------------

def test_overlap_counts_pixels_with_plus_one_and_needs_a_strict_overlap() -> None:
    # 10 x 10 pixels each, 5 x 10 shared: 50 / (100 + 100 - 50)
    assert overlap(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == 50 / 150
    # sharing only the column x = 9: +1 counting would give 10 / 190, the toolbox gives 0
    assert overlap(np.array([[0, 0, 9, 9]]), np.array([[9, 0, 18, 9]]))[0, 0] == 0
    # identical zero-width boxes: not a strict overlap either
    assert overlap(np.array([[10, 0, 10, 40]]), np.array([[10, 0, 10, 40]]))[0, 0] == 0


def test_strict_overlap_turns_a_degenerate_ignore_hit_into_a_false_positive() -> None:
    gt = {"a": [[10, 0, 10, 40, 0], [100, 100, 160, 160, 0]]}  # first: 0 px wide, ignored
    ev = run_eval(gt, [("a", 0.9, 10, 0, 10, 40), ("a", 0.5, 100, 100, 160, 160)])
    assert flags(ev) == ["fp", "tp"]  # +1 areas alone would make the first an ignore hit
    assert ev.summarize()["ap_plain"] == 0.5


def test_faces_under_30_px_are_ignore_regions_without_plus_one() -> None:
    gt = {"a": [[0, 0, 29, 100, 0], [100, 0, 130, 30, 0], [200, 0, 300, 29, 0]]}
    ev = run_eval(gt, [("a", 0.9, 0, 0, 29, 100), ("a", 0.8, 100, 0, 130, 30),
                       ("a", 0.7, 200, 0, 300, 29)])
    assert (ev.counts["faces"], ev.counts["ignore_regions"]) == (1, 2)
    assert flags(ev) == ["-", "tp", "-"]
    assert ev.summarize()["ap_plain"] == 1.0


def test_ignore_flag_makes_a_large_face_an_ignore_region() -> None:
    gt = {"a": [[0, 0, 100, 100, 1], [200, 0, 300, 100, 0]]}
    ev = run_eval(gt, [("a", 0.6, 0, 0, 100, 100), ("a", 0.5, 200, 0, 300, 100)])
    assert ev.counts["faces"] == 1
    assert flags(ev) == ["-", "tp"]


def test_detections_with_both_sides_at_most_21_px_are_dropped() -> None:
    gt = {"a": [[0, 0, 100, 100, 0]]}
    dets = [("a", 0.9, 0, 0, 21, 21), ("a", 0.8, 0, 0, 22, 21), ("a", 0.7, 0, 0, 21, 22),
            ("a", 0.6, 50, 50, 50, 71.5)]
    ev = run_eval(gt, dets)
    assert ev.counts["dropped_small"] == 1
    assert ev.order.tolist() == [1, 2, 3]


def test_overlap_of_exactly_half_is_not_a_match() -> None:
    gt = {"a": [[0, 0, 59, 59, 0]]}  # 60 x 60 pixels
    half, more = [0, 0, 59, 29], [0, 0, 59, 30]  # 60 x 30 and 60 x 31 pixels inside it
    assert overlap(np.array([half]), np.array([gt["a"][0][:4]]))[0, 0] == 0.5
    ev = run_eval(gt, [("a", 0.9, *half), ("a", 0.8, *more)])
    assert flags(ev) == ["fp", "tp"]


def test_ties_in_overlap_go_to_the_last_box() -> None:
    face, ignore = [0, 0, 50, 50, 0], [0, 0, 50, 50, 1]
    det = [("a", 0.9, 0, 0, 50, 50)]
    assert flags(run_eval({"a": [face, ignore]}, det)) == ["-"]
    assert flags(run_eval({"a": [ignore, face]}, det)) == ["tp"]
    # a detection halfway between two faces takes the second
    ev = run_eval({"a": [[0, 0, 40, 40, 0], [20, 0, 60, 40, 0]]}, [("a", 0.9, 10, 0, 50, 40)])
    assert overlap(np.array([[10, 0, 50, 40]]), np.array([[0, 0, 40, 40], [20, 0, 60, 40]])
                   ).tolist()[0] == [31 / 51, 31 / 51]
    assert ev.rounds[0].matched[0].tolist() == [20, 0, 60, 40]


def test_a_second_hit_on_a_face_is_a_false_positive_in_score_order() -> None:
    gt = {"a": [[0, 0, 50, 50, 0]]}
    ev = run_eval(gt, [("a", 0.2, 0, 0, 50, 50), ("a", 0.9, 1, 1, 50, 50)])
    assert flags(ev) == ["tp", "fp"]
    assert ev.rounds[0].matched[0].tolist() == [0, 0, 50, 50]
    assert ev.order.tolist() == [1, 0]


def test_detections_on_images_without_annotations_are_false_positives() -> None:
    gt = FaceGT({"a": [[0, 0, 50, 50, 0]], "empty": []})
    dets = Detections(["empty", "nowhere", "a"], [0.9, 0.8, 0.7],
                      [[0, 0, 50, 50], [0, 0, 50, 50], [0, 0, 50, 50]])
    ev = PascalFacesEval(gt, dets, nit=1)
    with pytest.warns(UserWarning, match=r"1 detections on 1 images .*'nowhere'"):
        ev.evaluate()
    assert ev.counts["on_unknown_images"] == 1
    assert ev.summarize()["ap_plain"] == pytest.approx(1 / 3)


def test_eleven_point_ap_is_nan_when_the_top_detection_is_on_an_ignore_region() -> None:
    gt = {"a": [[0, 0, 100, 100, 1], [200, 0, 300, 100, 0]]}
    ev = run_eval(gt, [("a", 0.9, 0, 0, 100, 100), ("a", 0.8, 200, 0, 300, 100)])
    curve = ev.curves["plain"]
    assert math.isnan(curve.precision[0])
    assert math.isnan(ev.summarize()["ap_11pt_plain"])  # the toolbox's numpy.max sees the NaN
    assert ap_11_point(curve.recall, curve.precision) == 1.0  # the NaN-skipping variant does not
    assert ev.summarize()["ap_plain"] == 1.0
    swapped = run_eval(gt, [("a", 0.8, 0, 0, 100, 100), ("a", 0.9, 200, 0, 300, 100)])
    assert swapped.summarize()["ap_11pt_plain"] == 1.0


def test_a_round_without_true_positives_leaves_every_later_detection_false() -> None:
    gt = {"a": [[0, 0, 50, 50, 0], [100, 0, 200, 100, 1]]}
    ev = run_eval(gt, [("a", 0.9, 100, 0, 200, 100), ("a", 0.8, 300, 0, 400, 100)], nit=3)
    assert flags(ev, 0) == ["-", "fp"]
    assert all(math.isnan(v) for v in ev.rounds[0].transform)
    assert flags(ev, 1) == flags(ev, 2) == ["fp", "fp"]  # NaN boxes overlap nothing
    assert ev.summarize()["ap"] == 0.0


# ---- properties --------------------------------------------------------------------------------

def random_faces(rng: np.random.Generator, n_images: int) -> dict[str, list[list[float]]]:
    gt = {}
    for i in range(n_images):
        rows = []
        for _ in range(rng.integers(1, 5)):
            x, y, w = rng.integers(0, 400), rng.integers(0, 400), rng.integers(30, 120)
            rows.append([x, y, x + w, y + int(w * rng.uniform(1.0, 1.4)), 0])
        gt[f"img{i}"] = rows
    return gt


def test_perfect_detections_score_one_with_and_without_calibration() -> None:
    rng = np.random.default_rng(0)
    gt = random_faces(rng, 20)
    gt["img0"].append([0, 0, 10, 10, 0])  # ignore region, left undetected
    dets = [(k, float(rng.random()), *r[:4]) for k, rows in gt.items() for r in rows
            if r[2] - r[0] >= 30]
    m = run_eval(gt, dets, nit=5).summarize()
    assert m == {"ap": 1.0, "ap_11pt": 1.0, "ap_plain": 1.0, "ap_11pt_plain": 1.0}


def test_permuting_detection_lines_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    gt = random_faces(rng, 15)
    dets = []
    for k, rows in gt.items():
        for r in rows:
            for _ in range(3):
                j = rng.normal(0, 8, 4)
                dets.append((k, 0.0, r[0] + j[0], r[1] + j[1], r[2] + j[2], r[3] + j[3]))
    dets = [(d[0], float(s), *d[2:]) for d, s in zip(dets, rng.permutation(len(dets)), strict=True)]
    base = run_eval(gt, dets, nit=5)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(dets))
        other = run_eval(gt, [dets[i] for i in order], nit=5)
        assert other.summarize() == base.summarize()
        assert np.array_equal(other.curves["calibrated"].precision,
                              base.curves["calibrated"].precision, equal_nan=True)


# ---- a loop-by-loop reference from the protocol text -------------------------------------------

def ref_overlap(d: list[float], g: list[float]) -> float:
    area_d = (abs(d[2] - d[0]) + 1) * (abs(d[3] - d[1]) + 1)
    area_g = (abs(g[2] - g[0]) + 1) * (abs(g[3] - g[1]) + 1)
    inter = 0.0
    if d[2] > g[0] and g[2] > d[0] and d[3] > g[1] and g[3] > d[1]:
        inter = (min(d[2], g[2]) - max(d[0], g[0]) + 1) * (min(d[3], g[3]) - max(d[1], g[1]) + 1)
    return inter / (area_d + area_g - inter)


def ref_ignored(g: list[float]) -> bool:
    return abs(g[2] - g[0]) < 30 or abs(g[3] - g[1]) < 30 or g[4] != 0


def ref_ap(tp: list[int], fp: list[int], faces: int) -> tuple[float, float]:
    """VOCap (Python max envelope) and VOColdap (numpy.max) on running sums."""
    rec, prec, t, f = [], [], 0, 0
    for a, b in zip(tp, fp, strict=True):
        t, f = t + a, f + b
        rec.append(t / faces)
        prec.append(t / (t + f) if t + f else math.nan)
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, 0, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    ap = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec))
             if mrec[i] != mrec[i - 1])
    ap11 = 0.0
    for r in np.linspace(0, 1, 11):
        reached = [p for q, p in zip(rec, prec, strict=True) if q >= r]
        ap11 += (float(np.max(reached)) if reached else 0.0) / 11
    return ap, ap11


def ref_evaluate(gt: dict[str, list[list[float]]], dets: list[tuple], nit: int) -> dict:
    faces = sum(not ref_ignored(g) for rows in gt.values() for g in rows)
    kept = [list(d) for d in dets if d[4] - d[2] > 21 or d[5] - d[3] > 21]
    kept.sort(key=lambda d: d[1], reverse=True)
    results = []
    for _ in range(nit):
        tp, fp, taken, offsets = [], [], set(), []
        for d in kept:
            best, best_j = 0.0, -1
            for j, g in enumerate(gt.get(d[0], [])):
                o = ref_overlap(d[2:], g)
                if o >= best:
                    best, best_j = o, j
            t = f = 0
            if best > 0.5:
                g = gt[d[0]][best_j]
                if ref_ignored(g):
                    pass
                elif (d[0], best_j) in taken:
                    f = 1
                else:
                    t = 1
                    taken.add((d[0], best_j))
                    dw, dh = d[4] - d[2], d[5] - d[3]
                    offsets.append((((g[0] + g[2]) / 2 - (d[2] + d[4]) / 2) / dw,
                                    ((g[1] + g[3]) / 2 - (d[3] + d[5]) / 2) / dh,
                                    (g[2] - g[0]) / dw, (g[3] - g[1]) / dh))
            else:
                f = 1
            tp.append(t)
            fp.append(f)
        results.append(ref_ap(tp, fp, faces))
        mean = [sum(o[i] for o in offsets) / len(offsets) if offsets else math.nan
                for i in range(4)]
        moved = []
        for d in kept:
            w, h = (d[4] - d[2]) / 2, (d[5] - d[3]) / 2
            cx, cy = (d[4] + d[2]) / 2 + mean[0] * 2 * w, (d[5] + d[3]) / 2 + mean[1] * 2 * h
            moved.append([d[0], d[1], cx - w * mean[2], cy - h * mean[3], cx + w * mean[2],
                          cy + h * mean[3]])
        kept = moved
    return {"ap": results[-1][0], "ap_11pt": results[-1][1], "ap_plain": results[0][0],
            "ap_11pt_plain": results[0][1]}


def random_case(rng: np.random.Generator) -> tuple[dict, list[tuple], int]:
    """Integer boxes and coarse scores for ties in overlap and score; small and flagged faces,
    duplicated faces, images without faces, detections on unknown images and tiny detections."""
    gt: dict[str, list[list[float]]] = {}
    for i in range(rng.integers(1, 5)):
        rows = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.integers(0, 150, 2)
            w, h = rng.integers(15, 90, 2)
            rows.append([int(x), int(y), int(x + w), int(y + h), int(rng.random() < 0.15)])
            if rng.random() < 0.2:
                rows.append([*rows[-1][:4], int(rng.random() < 0.5)])
        gt[f"im{i}"] = rows
    images = [*gt, "unknown"]
    dets = []
    for _ in range(rng.integers(0, 25)):
        k = images[rng.integers(len(images))]
        if gt.get(k) and rng.random() < 0.7:
            g = gt[k][rng.integers(len(gt[k]))]
            x1, y1, x2, y2 = (np.array(g[:4], float) + rng.integers(-6, 7, 4)
                              * rng.choice([0, 1, 2.5]))
            if rng.random() < 0.3:  # a shared offset and scale, as detectors have
                cx, cy, s = (x1 + x2) / 2 + 4, (y1 + y2) / 2 - 3, 1.2
                x1, x2 = cx - s * (cx - x1), cx + s * (x2 - cx)
                y1, y2 = cy - s * (cy - y1), cy + s * (y2 - cy)
        else:
            x1, y1 = rng.integers(0, 150, 2)
            x2, y2 = x1 + rng.integers(0, 90), y1 + rng.integers(0, 90)
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
        dets.append((k, float(rng.integers(0, 6)) / 5, float(x1), float(y1), float(x2), float(y2)))
    if not any(not ref_ignored(g) for rows in gt.values() for g in rows):
        gt["im0"] = [*gt.get("im0", []), [0, 0, 60, 60, 0]]
    return gt, dets, int(rng.integers(1, 6))


def test_matches_a_loop_by_loop_reference_on_random_cases() -> None:
    rng = np.random.default_rng(2024)
    seen = {"nan_11pt": 0, "calibrated_differs": 0, "dead_round": 0}
    for case in range(300):
        gt, dets, nit = random_case(rng)
        ev = run_eval(gt, dets, nit=nit)
        got, want = ev.summarize(), ref_evaluate(gt, dets, nit)
        for m in METRICS:
            assert (math.isnan(got[m]) and math.isnan(want[m])) or \
                abs(got[m] - want[m]) <= 1e-9, (case, m, got, want)
        seen["nan_11pt"] += math.isnan(got["ap_11pt_plain"])
        seen["calibrated_differs"] += abs(got["ap"] - got["ap_plain"]) > 1e-6
        seen["dead_round"] += any(math.isnan(r.transform[0]) for r in ev.rounds[:-1])
    assert min(seen.values()) >= 5, seen  # the cases reach every branch


# ---- calibration -------------------------------------------------------------------------------

@pytest.mark.parametrize(("scale", "shift"), [(1.0, (0.338, 0.0)), (1.42, (0.07, -0.04))])
def test_calibration_moves_systematically_offset_boxes_back_onto_the_faces(
        scale: float, shift: tuple[float, float]) -> None:
    gt, dets = {}, []
    widths = [30, 40, 50, 60, 80, 120, 200, 300]
    for i, w in enumerate(widths):  # the largest faces score highest
        h = 1.2 * w
        gt[f"im{i}"] = [[100, 50, 100 + w, 50 + h, 0]]
        dw, dh = scale * w, scale * h
        cx, cy = 100 + w / 2 + shift[0] * dw, 50 + h / 2 + shift[1] * dh
        dets.append((f"im{i}", w / 1000, cx - dw / 2, cy - dh / 2, cx + dw / 2, cy + dh / 2))
    plain = run_eval(gt, dets, nit=1)
    # the +1 areas put small faces just above 0.5 overlap, large ones just below
    assert flags(plain) == ["fp"] * 4 + ["tp"] * 4
    assert plain.summarize()["ap_plain"] == pytest.approx(0.5 * 4 / 8)  # recall 4/8 at 4/8
    ev = run_eval(gt, dets, nit=5)
    tx, ty, sx, sy = ev.rounds[0].transform
    assert (tx, ty, sx, sy) == pytest.approx((-shift[0], -shift[1], 1 / scale, 1 / scale))
    np.testing.assert_allclose(ev.rounds[1].boxes[::-1], [g[0][:4] for g in gt.values()],
                               atol=1e-9)
    assert ev.summarize()["ap"] == 1.0
    assert ev.summarize()["ap_plain"] == plain.summarize()["ap_plain"]
    assert run_eval(gt, dets, nit=2).summarize()["ap"] == 1.0  # nit - 1 = one re-mapping
    assert ev.curves["calibrated"].extra["transforms"][0] == pytest.approx([tx, ty, sx, sy])


# ---- loaders -----------------------------------------------------------------------------------

def write_mat(path: Path, entries: list[tuple[str, np.ndarray]]) -> None:
    """The toolbox's layout: an N x 1 struct array `Annotations` (imgname, objects)."""
    ann = np.zeros((len(entries), 1), dtype=[("imgname", object), ("objects", object)])
    for i, (name, objects) in enumerate(entries):
        ann[i, 0]["imgname"] = name
        ann[i, 0]["objects"] = objects
    scipy.io.savemat(path, {"Annotations": ann})


MAT_ENTRIES = [
    ("2008_000001.jpg", np.array([[10, 20, 60, 80, 0, 0], [100, 100, 120, 130, 0, 0],
                                  [200, 10, 300, 110, 0, 1]], float)),
    ("images/2008_000002.jpg", np.array([[5, 5, 55, 65]], float)),  # 4 values: ignore 0
    ("2008_000003.jpg", np.array([[0, 0, 40, 40, 1]], float)),  # 5 values: still ignore 0
    ("2008_000004.jpg", np.zeros((0, 0))),
]


def test_mat_loader_reads_the_toolbox_layout_in_both_loadmat_conventions(tmp_path: Path) -> None:
    path = tmp_path / "Annotations_Face_PASCALLayout_large_fixed.mat"
    write_mat(path, MAT_ENTRIES)
    want = {"2008_000001": [[10, 20, 60, 80, 0], [100, 100, 120, 130, 0], [200, 10, 300, 110, 1]],
            "2008_000002": [[5, 5, 55, 65, 0]], "2008_000003": [[0, 0, 40, 40, 0]],
            "2008_000004": []}
    loaded = [load_mat_gt(path), load_gt(path)]
    for record in (True, False):
        for squeeze in (True, False):
            raw = scipy.io.loadmat(path, struct_as_record=record, squeeze_me=squeeze)
            loaded.append(gt_from_mat(raw["Annotations"]))
    for gt in loaded:
        assert {k: v.tolist() for k, v in gt.boxes.items()} == want
        assert gt.image_ids == {"2008_000001": 1, "2008_000002": 2, "2008_000003": 3,
                                "2008_000004": 4}
        assert (gt.n_faces, gt.n_ignored) == (3, 2)  # 20 px wide and flagged


def test_mat_loader_errors_name_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "gt.mat"
    scipy.io.savemat(path, {"Other": np.zeros(3)})
    with pytest.raises(UserError, match=r"gt\.mat: no variable 'Annotations' \(variables: Other"):
        load_mat_gt(path)
    write_mat(path, [("a.jpg", np.zeros((0, 0))), ("x/a.png", np.array([[0, 0, 40, 40.]]))])
    with pytest.raises(UserError, match=r"Annotations\(2\)\.imgname: image 'a' again"):
        load_mat_gt(path)
    write_mat(path, [("a.jpg", np.array([[0, 0, 40.]]))])
    with pytest.raises(UserError, match=r"Annotations\(1\)\.objects row 1: .*at least 4"):
        load_mat_gt(path)
    scipy.io.savemat(path, {"Annotations": np.array([("a.jpg",)], dtype=[("imgname", object)])})
    with pytest.raises(UserError, match=r"Annotations\(1\): no field 'objects'"):
        load_mat_gt(path)
    (tmp_path / "bad.mat").write_text("not matlab")
    with pytest.raises(UserError, match=r"bad\.mat: not a MATLAB file"):
        load_mat_gt(tmp_path / "bad.mat")
    with pytest.raises(UserError, match="no such file"):
        load_mat_gt(tmp_path / "missing.mat")


def test_text_loader(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("# imgname x1 y1 x2 y2 [ignore]\n2008_1.jpg 10 20 60 80\n\n"
                    "2008_1.jpg 100 100 200 200 1\nsub/2008_2.jpg\n2008_3 0 0 40.5 41 0\n")
    gt = load_gt(path)
    assert {k: v.tolist() for k, v in gt.boxes.items()} == {
        "2008_1": [[10, 20, 60, 80, 0], [100, 100, 200, 200, 1]], "2008_2": [],
        "2008_3": [[0, 0, 40.5, 41, 0]]}
    assert gt.image_ids == {"2008_1": 1, "2008_2": 2, "2008_3": 3}
    for line, message in [("a 1 2 3", r":2: 4 fields: expected 'imgname x1 y1 x2 y2 \[ignore\]'"),
                          ("a 1 2 3 y", r":2: y2 'y': expected a finite number"),
                          ("a 1 2 3 nan", r":2: y2 'nan': expected a finite number"),
                          ("a 5 2 3 9", r":2: box \(5, 2, 3, 9\): expected corners"),
                          ("a 1 2 3 9 2", r":2: ignore '2': expected 0 or 1")]:
        path.write_text(f"ok.jpg 0 0 50 50\n{line}\n")
        with pytest.raises(UserError, match=r"gt\.txt" + message):
            load_text_gt(path)


def coco_gt_dict() -> dict:
    return {"images": [{"id": 7, "file_name": "dir/2008_1.jpg"},
                       {"id": 9, "file_name": "2008_2.jpg"}, {"id": 11, "file_name": "2008_3.jpg"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 50, 60], "area": 3000,
                 "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 5, "bbox": [100, 100, 80, 90],
                 "area": 7200, "iscrowd": 1},
                {"id": 3, "image_id": 9, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600,
                 "iscrowd": 0}],
            "categories": [{"id": 3, "name": "face"}, {"id": 5, "name": "person"}]}


def test_coco_loader(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_gt_dict()))
    gt = load_gt(path)
    assert {k: v.tolist() for k, v in gt.boxes.items()} == {
        "2008_1": [[10, 20, 60, 80, 0], [100, 100, 180, 190, 1]], "2008_2": [[0, 0, 40, 40, 0]],
        "2008_3": []}
    assert gt.image_ids == {"2008_1": 7, "2008_2": 9, "2008_3": 11}
    assert (gt.category_id, gt.n_faces, gt.n_ignored) == (3, 2, 1)
    bad = coco_gt_dict()
    bad["annotations"][2]["bbox"] = [0, 0, -4, 40]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"gt\.json: annotation id 3: bbox \[0, 0, -4, 40\]"):
        load_coco_gt(path)
    bad = coco_gt_dict()
    bad["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="annotation id 1: image_id 99: not among the images"):
        load_coco_gt(path)
    path.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(UserError, match=r"gt\.json:2: not valid JSON"):
        load_coco_gt(path)


def test_detection_loader_keys_errors_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dets.txt"
    path.write_text("2008_1.jpg 0.5 1 2 30 40\n\n2008_2 -1e3  0 0 22.5 3\n"
                    "x/2008_1.jpg 1 0 0 30 30\n")
    d = load_toolbox_dets(path)
    assert d.images.tolist() == ["2008_1", "2008_2", "x/2008_1"]
    assert d.scores.tolist() == [0.5, -1000.0, 1.0]
    assert d.boxes.tolist() == [[1, 2, 30, 40], [0, 0, 22.5, 3], [0, 0, 30, 30]]
    for line, message in [("a.jpg 0.5 1 2 3", r":2: 5 fields: expected 'imgname score x1 y1"),
                          ("a.jpg nan 1 2 3 4", r":2: score 'nan': expected a finite number"),
                          ("a.jpg 1 1 2 inf 4", r":2: x2 'inf': expected a finite number"),
                          ("a.jpg 1 9 2 3 4", r":2: box \(9, 2, 3, 4\): expected corners")]:
        path.write_text(f"ok.jpg 1 0 0 40 40\n{line}\n")
        with pytest.raises(UserError, match=r"dets\.txt" + message):
            load_toolbox_dets(path)


# ---- writers -----------------------------------------------------------------------------------

def test_toolbox_writer_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(-5, 500, (50, 2))
    boxes = np.hstack([xy, xy + rng.uniform(0, 100, (50, 2))])
    dets = Detections([f"im{i % 7}" for i in range(50)], rng.normal(size=50), boxes)
    write_toolbox_dets(tmp_path / "d.txt", dets)
    back = load_toolbox_dets(tmp_path / "d.txt")
    assert back.images.tolist() == dets.images.tolist()
    assert np.array_equal(back.scores, dets.scores) and np.array_equal(back.boxes, dets.boxes)


def test_coco_results_writer_round_trips_through_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    (tmp_path / "gt.json").write_text(json.dumps(coco_gt_dict()))
    gt = load_coco_gt(tmp_path / "gt.json")
    dets = Detections(["2008_1", "2008_2", "2008_1"], [0.9, 0.8, 0.1],
                      [[10, 20, 60, 80], [0.5, 0, 40, 40.25], [300, 300, 350, 360]])
    write_coco_results(tmp_path / "res.json", dets, gt)
    results = json.loads((tmp_path / "res.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(7, 3), (9, 3), (7, 3)]
    coco = COCO(str(tmp_path / "gt.json"))
    assert len(coco.loadRes(str(tmp_path / "res.json")).anns) == 3
    back = load_dets(tmp_path / "res.json", gt)
    assert back.images.tolist() == dets.images.tolist()
    np.testing.assert_allclose(back.boxes, dets.boxes, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="no id in the ground truth"):
        write_coco_results(tmp_path / "x.json", Detections(["zz"], [1], [[0, 0, 1, 1]]), gt)
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 8, "bbox": [0, 0, 1, 1],
                                                    "score": 1}]))
    with pytest.raises(UserError, match=r"bad\.json: result 0: image_id 8"):
        load_coco_dets(tmp_path / "bad.json", gt)


# ---- the COCO cross-check ----------------------------------------------------------------------

def test_coco_cross_check_agrees_where_the_conventions_coincide() -> None:
    faces = {"a": [[0, 0, 100, 120, 0], [200, 0, 260, 70, 0], [10, 300, 15, 310, 0]],
             "b": [[50, 50, 150, 170, 0]], "c": []}
    gt = FaceGT(faces)
    # every face found before any false positive; a hit on the 5 px (ignored, crowd) face
    dets = Detections(["a", "a", "b", "a", "c", "b"], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                      [[0, 0, 100, 120], [200, 0, 260, 70], [50, 50, 150, 170],
                       [0, 290, 30, 330], [0, 0, 50, 50], [400, 400, 480, 480]])
    check = coco_ap50(gt, dets)
    ours = PascalFacesEval(gt, dets, nit=1).summarize()["ap_plain"]
    assert check["role"] == "cross-check" and "not the Pascal Faces protocol" in check["note"]
    assert check["value"] == pytest.approx(1.0) and ours == 1.0
    # with a false positive inside the ranking the interpolations part, but only a little
    dets = Detections(["a", "c", "b", "a"], [0.9, 0.8, 0.7, 0.6],
                      [[0, 0, 100, 120], [0, 0, 50, 50], [50, 50, 150, 170], [200, 0, 260, 70]])
    ours = PascalFacesEval(gt, dets, nit=1).summarize()["ap_plain"]
    assert ours == pytest.approx(1 / 3 + 2 / 3 * 3 / 4)
    assert abs(coco_ap50(gt, dets)["value"] - ours) < 0.02


# ---- the command line --------------------------------------------------------------------------

def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench eval")
    pascal_cli.add_parser(parser.add_subparsers(dest="evaluator", required=True))
    args = parser.parse_args(["pascal", *argv])
    return args.func(args)


def test_cli_prints_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_mat(tmp_path / "gt.mat", MAT_ENTRIES)
    (tmp_path / "dets.txt").write_text(
        "2008_000001.jpg 0.9 200 10 300 110\n"  # on the flagged face: the 11-point AP is NaN
        "2008_000001.jpg 0.8 10 20 60 80\n2008_000002.jpg 0.7 5 5 55 65\n"
        "2009_000009.jpg 0.6 0 0 50 50\n2008_000002.jpg 0.5 0 0 10 10\n")
    assert cli(["--gt", str(tmp_path / "gt.mat"), "--dets", str(tmp_path / "dets.txt"),
                "--coco-check", "--json", str(tmp_path / "m.json"),
                "--plot", str(tmp_path / "pr.svg")]) == 0
    out, err = capsys.readouterr()
    assert "3 faces (+2 ignore regions)" in out and "1 dropped" in out
    assert "nit=5" in out and "cross-check: pycocotools AP@0.5" in out
    assert "1 detections on 1 images the ground truth does not list" in err
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["metrics"]["ap_plain"] == pytest.approx(2 / 3)
    assert report["metrics"]["ap_11pt_plain"] is None  # NaN, as the toolbox prints it
    assert report["cross_check"]["role"] == "cross-check"
    assert [c["name"] for c in report["curves"]] == ["calibrated (nit=5)", "plain (nit=1)"]
    assert (tmp_path / "pr.svg").read_text().lstrip().startswith("<?xml")


def test_cli_text_ground_truth_and_user_errors(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "gt.lst").write_text("a.jpg 0 0 50 50\n")
    (tmp_path / "dets.txt").write_text("a.jpg 1 0 0 50 50\n")
    assert cli(["--gt", str(tmp_path / "gt.lst"), "--format", "text", "--dets",
                str(tmp_path / "dets.txt"), "--nit", "1", "--json", str(tmp_path / "m.json")]) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["metrics"] == {m: 1.0 for m in METRICS}
    assert len(report["curves"]) == 1
    capsys.readouterr()
    with pytest.raises(UserError, match="--nit 0"):
        cli(["--gt", str(tmp_path / "gt.lst"), "--dets", str(tmp_path / "dets.txt"), "--nit", "0"])
    (tmp_path / "small.txt").write_text("a.jpg 0 0 20 50\n")
    with pytest.raises(UserError, match="no face counts towards recall"):
        cli(["--gt", str(tmp_path / "small.txt"), "--dets", str(tmp_path / "dets.txt")])
    (tmp_path / "dets.txt").write_text("a.jpg 1 0 0 50\n")
    with pytest.raises(UserError, match=r"dets\.txt:1: 5 fields"):
        cli(["--gt", str(tmp_path / "gt.lst"), "--dets", str(tmp_path / "dets.txt")])


# ---- the real annotations, where present -------------------------------------------------------

REAL_GT = SHARED_DATA / "pascal_faces" / "Annotations_Face_PASCALLayout_large_fixed.mat"


@pytest.mark.skipif(not REAL_GT.is_file(), reason=f"Pascal Faces annotations not at {REAL_GT}")
def test_real_annotations_load_and_score_their_own_faces_perfectly() -> None:
    gt = load_mat_gt(REAL_GT)
    assert len(gt.boxes) == 851 and 1300 <= gt.n_faces + gt.n_ignored <= 1400
    keys = [k for k, rows in gt.boxes.items() for _ in rows]
    rows = np.concatenate([r for r in gt.boxes.values() if len(r)])
    dets = Detections(keys, np.linspace(1, 0, len(keys)), rows[:, :4])
    metrics = PascalFacesEval(gt, dets).summarize()
    assert metrics["ap"] == metrics["ap_plain"] == 1.0
