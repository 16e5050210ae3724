"""WIDER FACE evaluation: every rule of the official MATLAB tool by hand, properties, agreement
with a loop-by-loop transcription of the tool, the real val ground truth, and the file formats."""

import argparse
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from support.shared_data import SHARED_DATA
from support.wider_reference import (
    norm_score,
    read_pred,
    reference_image_pr_info,
    reference_wider,
)

from bench.errors import UserError
from bench.evals.wider import (
    SETTINGS,
    THRESH_NUM,
    ImageKey,
    WiderEval,
    WiderGroundTruth,
    WiderPredictionWarning,
    ap_of_counts,
    image_counts,
    load_wider_bbx_gt,
    load_wider_mat,
    read_wider_predictions,
    thresholds,
    write_wider_predictions,
)
from bench.evals.wider_cli import add_parser

REAL_GT = SHARED_DATA / "wider_val_gt"
needs_real_gt = pytest.mark.skipif(not (REAL_GT / "wider_face_val.mat").is_file(),
                                   reason=f"WIDER val ground truth not found in {REAL_GT}")


def make_gt(boxes: Mapping[ImageKey, list], counted: Mapping[str, Mapping[ImageKey, list]]
            | None = None) -> WiderGroundTruth:
    """Ground truth from box lists; `counted` gives 0-based counted indices per setting and image
    (default: every face counts in every setting)."""
    arrays = {k: np.asarray(v, dtype=float).reshape(-1, 4) for k, v in boxes.items()}
    masks = {}
    for s in SETTINGS:
        masks[s] = {}
        for k, b in arrays.items():
            m = np.ones(len(b), bool)
            if counted is not None and k in counted.get(s, {}):
                m = np.zeros(len(b), bool)
                m[list(counted[s][k])] = True
            masks[s][k] = m
    return WiderGroundTruth(tuple(dict.fromkeys(e for e, _ in arrays)), arrays, masks)


def scored(gt: WiderGroundTruth, predictions: Mapping, settings=SETTINGS) -> WiderEval:
    ev = WiderEval(gt, predictions, settings)
    ev.summarize()
    return ev


A, B = ("0--Parade", "a"), ("0--Parade", "b")
FACE = [0, 0, 9, 9]  # x2 = 9, area 100 with the +1 convention


def t_index(t: int) -> int:
    """Position of threshold t (1-based, thresh = 1 - t/1000) in the curves."""
    return t - 1


# ---------------------------------------------------------------- rules, by hand


def test_ignore_region_and_second_hit():
    """g1 does not count in easy: a prediction on it is neither TP nor FP; a second hit on g0 is
    a false positive. Scores 10, 8, 6, 2 normalise to 1, 0.75, 0.5, 0 exactly."""
    gt = make_gt({A: [FACE, [100, 0, 9, 9], [200, 0, 9, 9]]}, {"easy": {A: [0, 2]}})
    preds = {A: np.array([[0, 0, 9, 9, 10], [100, 0, 9, 9, 8], [0, 1, 9, 9, 6],
                          [500, 500, 9, 9, 2]], float)}
    ev = scored(gt, preds)
    expected_p = np.repeat([1, 1, 2, 3], [249, 250, 500, 1])  # t 1-249, 250-499, 500-999, 1000
    np.testing.assert_array_equal(ev.proposals["easy"], expected_p)
    np.testing.assert_array_equal(ev.tp["easy"], np.ones(1000))
    assert ev.curves["easy"].extra["faces"] == 2
    np.testing.assert_allclose(ev.curves["easy"].recall, 0.5)
    np.testing.assert_allclose(ev.curves["easy"].precision, 1 / expected_p)
    assert ev.curves["easy"].ap == pytest.approx(0.5, abs=1e-12)
    # in hard every face counts: the prediction on g1 is a true positive
    np.testing.assert_array_equal(ev.proposals["hard"], np.repeat([1, 2, 3, 4], [249, 250, 500, 1]))
    np.testing.assert_array_equal(ev.tp["hard"], np.repeat([1, 2], [249, 751]))
    assert ev.summarize()["hard"] == pytest.approx(2 / 3, abs=1e-12)


def test_score_threshold_is_inclusive():
    """Normalised 0.75 is reached at t = 250 (thresh exactly 0.75), not at t = 249."""
    gt = make_gt({A: [FACE, [100, 0, 9, 9]]})
    ev = scored(gt, {A: np.array([[0, 0, 9, 9, 1.0], [100, 0, 9, 9, 0.75], [0, 50, 5, 5, 0]])})
    assert ev.tp["easy"][t_index(249)] == 1
    assert ev.tp["easy"][t_index(250)] == 2


def test_iou_tie_takes_the_first_box():
    """Two identical boxes: the prediction takes the first. It is ignored when only the second
    counts, and a true positive when only the first counts."""
    gt = make_gt({A: [FACE, FACE]}, {"easy": {A: [1]}, "medium": {A: [0]}})
    ev = scored(gt, {A: np.array([[0, 0, 9, 9, 1.0], [300, 300, 5, 5, 0.0]])})
    assert ev.tp["easy"].max() == 0
    assert ev.proposals["easy"][t_index(999)] == 0  # the match is ignored
    assert np.isnan(ev.curves["easy"].precision[t_index(1)])
    assert ev.summarize()["easy"] == 0
    assert ev.tp["medium"][t_index(1)] == 1
    assert ev.summarize()["medium"] == 1


@pytest.mark.parametrize(("height", "hit"), [(4, True), (3, False)])
def test_iou_half_counts_with_plus_one_pixels(height: int, hit: bool):
    """[0 0 9 4] against [0 0 9 9]: with x2 = x + w and +1 areas, 10x5 / 10x10 = 0.5 exactly,
    which matches (>=). Without the +1 it would be 36/81 and miss; [0 0 9 3] gives 0.4."""
    gt = make_gt({A: [FACE]})
    ev = scored(gt, {A: np.array([[0, 0, 9, height, 1.0], [300, 300, 5, 5, 0.0]])})
    assert ev.tp["easy"][t_index(1)] == int(hit)
    assert ev.summarize()["easy"] == (1.0 if hit else 0.0)


def test_one_pixel_box_matches_itself():
    """A zero-size box covers one pixel (+1 convention): IoU 1 with itself, not 0/0."""
    gt = make_gt({A: [[5, 5, 0, 0]]})
    ev = scored(gt, {A: np.array([[5, 5, 0, 0, 1.0], [300, 300, 5, 5, 0.0]])})
    assert ev.tp["easy"][t_index(1)] == 1


def test_images_without_predictions_still_count_their_faces():
    gt = make_gt({A: [FACE], B: [FACE, [50, 50, 9, 9]]})
    ev = scored(gt, {A: np.array([[0, 0, 9, 9, 1.0], [300, 300, 5, 5, 0.0]])})
    assert ev.curves["easy"].extra["faces"] == 3
    assert ev.curves["easy"].recall[t_index(1)] == pytest.approx(1 / 3)
    assert ev.summarize()["easy"] == pytest.approx(1 / 3)


def test_image_without_faces_is_skipped_but_normalised_with_the_rest():
    """B has no boxes: its predictions are no false positives, yet B's score 2 is the global max,
    so A's only (true) prediction normalises to 0 and reaches only the last threshold; above it
    nothing is proposed and precision is 0/0 = NaN."""
    gt = make_gt({A: [FACE], B: []})
    ev = scored(gt, {A: np.array([[0, 0, 9, 9, 1.0]]), B: np.array([[0, 0, 9, 9, 2.0]])})
    curve = ev.curves["easy"]
    assert np.isnan(curve.precision[:999]).all()
    assert (curve.recall[:999] == 0).all()
    assert ev.proposals["easy"][999] == 1 and ev.tp["easy"][999] == 1
    assert curve.precision[999] == 1 and curve.recall[999] == 1
    assert curve.ap == 1.0


def test_one_global_normalisation():
    """min 0.1 and max 1.0 over both images: A's true positive (0.2) normalises to 0.111, so at
    thresh 0.5 only B's two predictions are in. Per-image normalisation would put it at 1."""
    gt = make_gt({A: [FACE], B: [FACE]})
    preds = {A: np.array([[0, 0, 9, 9, 0.2], [300, 300, 5, 5, 0.1]]),
             B: np.array([[0, 0, 9, 9, 1.0], [300, 300, 5, 5, 0.6]])}
    ev = scored(gt, preds)
    assert ev.proposals["easy"][t_index(500)] == 2
    assert ev.tp["easy"][t_index(500)] == 1
    assert ev.tp["easy"][t_index(900)] == 2  # 0.111 >= 0.1


def test_negative_scores_keep_the_single_precision_floor():
    """norm_score.m starts its max at realmin('single'): with scores -1 and -2 the top score
    normalises to (-1 + 2) / (realmin + 2) = 0.5, not 1, so t < 500 proposes nothing."""
    gt = make_gt({A: [FACE]})
    ev = scored(gt, {A: np.array([[0, 0, 9, 9, -1.0], [300, 300, 5, 5, -2.0]])})
    assert ev.proposals["easy"][t_index(499)] == 0
    assert np.isnan(ev.curves["easy"].precision[t_index(499)])
    assert ev.tp["easy"][t_index(500)] == 1
    assert ev.summarize()["easy"] == 1


def test_equal_scores_reach_no_threshold():
    gt = make_gt({A: [FACE]})
    with pytest.warns(UserWarning, match="scores are equal"):
        ev = scored(gt, {A: np.array([[0, 0, 9, 9, 0.7], [300, 300, 5, 5, 0.7]])})
    assert ev.proposals["easy"].max() == 0
    assert ev.summarize()["easy"] == 0


def test_ties_in_score_keep_file_order(tmp_path: Path):
    """Equal scores keep their file order after the descending sort (MATLAB's sort is stable);
    an unsorted file gives the result of the sorted one."""
    gt = make_gt({A: [FACE, [100, 0, 9, 9]]})
    rows = np.array([[300, 300, 5, 5, 0.5], [0, 0, 9, 9, 0.9], [0, 1, 9, 9, 0.5],
                     [100, 0, 9, 9, 0.5], [0, 0, 9, 9, 0.1]])
    ev = scored(gt, {A: rows})
    np.testing.assert_array_equal(ev.sorted_predictions[A], rows[[1, 0, 2, 3, 4]])
    ev_sorted = scored(gt, {A: rows[[1, 0, 2, 3, 4]]})
    write_wider_predictions(tmp_path, {A: rows})
    ev_file = scored(gt, read_wider_predictions(tmp_path, gt))
    for other in (ev_sorted, ev_file):
        for s in SETTINGS:
            np.testing.assert_array_equal(other.proposals[s], ev.proposals[s])
            np.testing.assert_array_equal(other.tp[s], ev.tp[s])
            assert other.curves[s].ap == ev.curves[s].ap


def test_thresholds_are_the_tools():
    t = thresholds()
    assert len(t) == 1000 and t[0] == 1 - 1 / 1000 and t[249] == 0.75 and t[-1] == 0


def test_unknown_setting_and_unknown_image():
    gt = make_gt({A: [FACE]})
    with pytest.raises(UserError, match="settings"):
        WiderEval(gt, {}, ["extreme"])
    with pytest.warns(WiderPredictionWarning, match="1 predictions name no ground-truth") as rec:
        WiderEval(gt, {("9--X", "zz"): np.zeros((0, 5))})
    assert rec[0].message.unexpected == ["9--X/zz"]
    with pytest.raises(UserError, match=r"0--Parade/a, row 2: height: expected >= 0"):
        WiderEval(gt, {A: np.array([[0, 0, 1, 1, 0.5], [0, 0, 1, -1, 0.5]])})


# ---------------------------------------------------------------- properties and the reference


def random_case(rng: np.random.Generator, n_images: int = 4, max_faces: int = 7,
                max_preds: int = 14) -> tuple[WiderGroundTruth, dict[ImageKey, np.ndarray]]:
    """Small integer boxes (so IoU ties and IoU = 0.5 happen), nested settings, images without
    faces or predictions, coarse scores (ties, thresholds hit exactly) or continuous ones."""
    boxes, counted, preds = {}, {s: {} for s in SETTINGS}, {}
    mode = rng.integers(4)
    for i in range(int(rng.integers(1, n_images + 1))):
        key = (f"{i % 2}--Event", f"img_{i}")
        n = int(rng.integers(0, max_faces + 1))
        b = np.c_[rng.integers(0, 30, (n, 2)), rng.integers(0, 12, (n, 2))].astype(float)
        if n > 1 and rng.random() < 0.3:
            b[1] = b[0]
        boxes[key] = b
        hard = rng.random(n) < 0.75
        medium = hard & (rng.random(n) < 0.7)
        easy = medium & (rng.random(n) < 0.6)
        for s, m in zip(SETTINGS, (easy, medium, hard), strict=True):
            counted[s][key] = np.flatnonzero(m).tolist()
        if rng.random() < 0.2:
            continue
        m = int(rng.integers(0, max_preds + 1))
        p = np.c_[rng.integers(0, 35, (m, 2)), rng.integers(0, 12, (m, 2))].astype(float)
        near = rng.random(m) < 0.6
        if n:
            src = b[rng.integers(0, n, m)] + rng.integers(-2, 3, (m, 4))
            p[near] = np.maximum(src[near], 0)
        scores = {0: rng.integers(0, 9, m) / 8, 1: rng.random(m), 2: -rng.random(m) * 3,
                  3: rng.integers(0, 5, m) * 0.1 + 0.3}[int(mode)]
        preds[key] = np.c_[p, scores]
    return make_gt(boxes, counted), preds


def assert_matches_reference(gt: WiderGroundTruth, preds: Mapping, ev: WiderEval) -> None:
    ref = reference_wider(gt, preds)
    for s in SETTINGS:
        np.testing.assert_array_equal(ev.proposals[s], ref[s]["proposals"])
        np.testing.assert_array_equal(ev.tp[s], ref[s]["tp"])
        np.testing.assert_allclose(ev.curves[s].precision, ref[s]["precision"], rtol=0,
                                   atol=1e-9)
        np.testing.assert_allclose(ev.curves[s].recall, ref[s]["recall"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ev.curves[s].ap, ref[s]["ap"], rtol=0, atol=1e-9)
        assert ev.curves[s].extra["faces"] == ref[s]["faces"]


def test_agrees_with_the_loop_by_loop_reference():
    rng = np.random.default_rng(2016)
    for _ in range(220):
        gt, preds = random_case(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # equal scores: warned about, scored all the same
            ev = scored(gt, preds)
        assert_matches_reference(gt, preds, ev)


def test_perfect_predictions_give_ap_one():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        cells = rng.choice(100, n, replace=False)
        b = np.c_[cells % 10 * 40, cells // 10 * 40, rng.integers(0, 30, (n, 2))].astype(float)
        keys = [("1--Event", f"i{k}") for k in rng.integers(0, 4, n)]
        boxes: dict[ImageKey, list] = {k: [] for k in keys}
        for k, row in zip(keys, b, strict=True):
            boxes[k].append(row)
        gt = make_gt(boxes, {"easy": {k: [0] for k in boxes}})
        preds = {k: np.c_[np.array(v), rng.random(len(v))] for k, v in boxes.items()}
        assert scored(gt, preds).summarize() == {"easy": 1.0, "medium": 1.0, "hard": 1.0}


def test_false_positive_below_every_true_positive_leaves_ap():
    """With a score-0 false positive fixing the normalisation, another false positive scored
    below every other prediction only adds points at the final recall."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        gt, preds = random_case(rng)
        key = next(iter(gt.boxes))
        base = {k: np.c_[v[:, :4], 0.5 + 0.5 * rng.random(len(v))] for k, v in preds.items()}
        base[key] = np.r_[base.get(key, np.zeros((0, 5))), [[900, 900, 5, 5, 0.0]]]
        more = dict(base)
        more[key] = np.r_[base[key], [[800, 800, 5, 5, 0.25]]]
        before, after = scored(gt, base).summarize(), scored(gt, more).summarize()
        for s in SETTINGS:
            np.testing.assert_equal(after[s], before[s])


def test_permuting_lines_changes_nothing():
    rng = np.random.default_rng(11)
    for _ in range(40):
        gt, preds = random_case(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev = scored(gt, preds)
            shuffled = scored(gt, {k: v[rng.permutation(len(v))] for k, v in preds.items()})
        for s in SETTINGS:
            np.testing.assert_array_equal(shuffled.proposals[s], ev.proposals[s])
            np.testing.assert_array_equal(shuffled.tp[s], ev.tp[s])
            np.testing.assert_equal(shuffled.curves[s].ap, ev.curves[s].ap)


def test_affine_score_change_changes_nothing():
    """Only the normalised scores matter: scaling and shifting every score is invisible."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        gt, preds = random_case(rng)
        preds = {k: np.c_[v[:, :4], rng.random(len(v))] for k, v in preds.items()}
        moved = {k: np.c_[v[:, :4], v[:, 4] * 4 + 3] for k, v in preds.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a single prediction: equal scores
            a, b = scored(gt, preds), scored(gt, moved)
        for s in SETTINGS:
            np.testing.assert_allclose(b.curves[s].ap, a.curves[s].ap, atol=1e-9)


def row_counts(rows: list[dict]) -> np.ndarray:
    """Per-image rows as the numbers a paired test resamples, an image a row."""
    return np.stack([image_counts([r["faces"], r["proposals"], r["recalled"]]) for r in rows])


def image_pr_info(row: dict) -> np.ndarray:
    """A per-image row as the tool's img_pr_info: proposals and recalled faces at each
    threshold."""
    counts = row_counts([row])[0]
    return np.c_[np.cumsum(counts[1:THRESH_NUM + 1]), np.cumsum(counts[THRESH_NUM + 1:])]


def test_each_images_row_is_the_tools_per_image_counts():
    """The rows paired tests resample: each is the img_pr_info evaluation.m adds for its image
    (nothing for an image it skips), and all of them together give the evaluator's AP."""
    rng = np.random.default_rng(2017)
    cases = [random_case(rng) for _ in range(120)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # equal scores: warned about, scored all the same
        evaluated = [scored(gt, preds) for gt, preds in cases]
    for (gt, preds), ev in zip(cases, evaluated, strict=True):
        normalised = norm_score(read_pred(gt, preds))
        for s in SETTINGS:
            rows = ev.image_rows(s)
            per_image, faces = reference_image_pr_info(gt, normalised, s)
            assert [(r["event"], r["image"]) for r in rows] == gt.images
            assert {r["setting"] for r in rows} == {s}
            assert sum(r["faces"] for r in rows) == faces
            for row in rows:
                key = (row["event"], row["image"])
                np.testing.assert_array_equal(image_pr_info(row),
                                              per_image.get(key, np.zeros((THRESH_NUM, 2))))
                assert set(row["recalled"]) <= set(row["proposals"])  # a recall is a proposal
            counts = row_counts(rows)
            np.testing.assert_equal(ap_of_counts(counts), ev.curves[s].ap)
            np.testing.assert_equal(ap_of_counts(counts.sum(axis=0, keepdims=True)),
                                    ev.curves[s].ap)


@pytest.mark.parametrize("values", [
    [True, [], []], [-1, [], []], [2.0, [], []], [1, [THRESH_NUM], []], [1, [], [-1]],
    [1, [0.5], []], [1, (0, 1), []], [1, ["3"], []], [1, [[0]], []]])
def test_a_row_that_is_not_an_images_counts_is_refused(values: list):
    with pytest.raises((TypeError, ValueError)):
        image_counts(values)


# ---------------------------------------------------------------- real ground truth


@needs_real_gt
def test_real_val_ground_truth_counts():
    gt = load_wider_mat(REAL_GT)
    assert len(gt.events) == 61
    assert len(gt.boxes) == 3226
    assert sum(len(b) for b in gt.boxes.values()) == 39708
    assert [gt.count_faces(s) for s in SETTINGS] == [7211, 13319, 31958]
    for key in gt.boxes:  # nested settings
        assert not (gt.counted["easy"][key] & ~gt.counted["medium"][key]).any()
        assert not (gt.counted["medium"][key] & ~gt.counted["hard"][key]).any()
    assert gt.boxes[("0--Parade", "0_Parade_marchingband_1_465")][0].tolist() == [345, 211, 4, 4]


@needs_real_gt
def test_real_images_agree_with_the_reference():
    """Real boxes, including the zero- and negative-size ones of the official files."""
    full = load_wider_mat(REAL_GT)
    odd = [k for k, b in full.boxes.items() if (b[:, 2:] <= 0).any()]
    keys = list(dict.fromkeys(odd + full.images[:25]))
    gt = WiderGroundTruth(full.events, {k: full.boxes[k] for k in keys},
                          {s: {k: full.counted[s][k] for k in keys} for s in SETTINGS})
    rng = np.random.default_rng(3)
    preds = {}
    for k in keys:
        b = gt.boxes[k]
        jit = b[rng.integers(0, len(b), 60)] + rng.normal(0, 2, (60, 4))
        rand = np.c_[rng.uniform(0, 1000, (40, 2)), rng.uniform(2, 80, (40, 2))]
        p = np.r_[jit, rand]
        p[:, 2:] = np.maximum(p[:, 2:], 0)
        preds[k] = np.c_[p, rng.random(len(p))]
    ev = scored(gt, preds)
    assert_matches_reference(gt, preds, ev)
    for s in SETTINGS:
        np.testing.assert_equal(ap_of_counts(row_counts(ev.image_rows(s))), ev.curves[s].ap)


# ---------------------------------------------------------------- .mat files


def write_mat_gt(folder: Path, images: Mapping[ImageKey, np.ndarray],
                 counted: Mapping[str, Mapping[ImageKey, list[int]]]) -> None:
    """The official four files' layout: 61x1-style cell arrays per event, per image."""
    events = list(dict.fromkeys(e for e, _ in images))

    def cell(rows: list) -> np.ndarray:
        c = np.empty((len(rows), 1), object)
        for i, r in enumerate(rows):
            c[i, 0] = r
        return c

    per_event = {e: [k for k in images if k[0] == e] for e in events}
    common = {"event_list": cell(events),
              "file_list": cell([cell([n for _, n in per_event[e]]) for e in events]),
              "face_bbx_list": cell([cell([np.asarray(images[k], np.int32).reshape(-1, 4)
                                           for k in per_event[e]]) for e in events])}
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "wider_face_val.mat", common)
    for s in SETTINGS:
        lists = cell([cell([np.array(counted[s][k], np.uint8).reshape(-1, 1) + 1
                            for k in per_event[e]]) for e in events])
        scipy.io.savemat(folder / f"wider_{s}_val.mat", {**common, "gt_list": lists})


SMALL = {("0--Parade", "p1"): np.array([[0, 0, 9, 9], [40, 0, 9, 9]]),
         ("0--Parade", "p2"): np.array([[0, 0, 0, 0]]),
         ("1--Handshaking", "h1"): np.array([[10, 10, 20, 20], [60, 10, 8, 8], [90, 10, 5, 5]])}
SMALL_COUNTED = {"easy": {("0--Parade", "p1"): [0], ("0--Parade", "p2"): [],
                          ("1--Handshaking", "h1"): [0]},
                 "medium": {("0--Parade", "p1"): [0], ("0--Parade", "p2"): [],
                            ("1--Handshaking", "h1"): [0, 1]},
                 "hard": {("0--Parade", "p1"): [0, 1], ("0--Parade", "p2"): [],
                          ("1--Handshaking", "h1"): [0, 1, 2]}}


def test_mat_round_trip(tmp_path: Path):
    write_mat_gt(tmp_path, SMALL, SMALL_COUNTED)
    gt = load_wider_mat(tmp_path)
    assert gt.events == ("0--Parade", "1--Handshaking")
    assert gt.images == list(SMALL)
    for k, b in SMALL.items():
        np.testing.assert_array_equal(gt.boxes[k], b)
        for s in SETTINGS:
            assert np.flatnonzero(gt.counted[s][k]).tolist() == SMALL_COUNTED[s][k]
    assert [gt.count_faces(s) for s in SETTINGS] == [2, 3, 5]


def test_mat_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not a folder"):
        load_wider_mat(tmp_path / "nope")
    write_mat_gt(tmp_path, SMALL, SMALL_COUNTED)
    (tmp_path / "wider_hard_val.mat").unlink()
    with pytest.raises(UserError, match=r"wider_hard_val\.mat: not found"):
        load_wider_mat(tmp_path)
    (tmp_path / "wider_hard_val.mat").write_text("not a mat file")
    with pytest.raises(UserError, match=r"wider_hard_val\.mat: not a readable MATLAB"):
        load_wider_mat(tmp_path)
    bad = {s: dict(c) for s, c in SMALL_COUNTED.items()}
    bad["easy"][("0--Parade", "p1")] = [5]
    write_mat_gt(tmp_path, SMALL, bad)
    with pytest.raises(UserError, match=r"wider_easy_val\.mat: field gt_list, event 1, image 1: "
                       r"expected 1-based face indices in 1\.\.2"):
        load_wider_mat(tmp_path)
    write_mat_gt(tmp_path, SMALL, SMALL_COUNTED)
    scipy.io.savemat(tmp_path / "wider_face_val.mat", {"event_list": np.zeros((2, 1))})
    with pytest.raises(UserError, match=r"wider_face_val\.mat: field event_list: expected a cell"):
        load_wider_mat(tmp_path)
    write_mat_gt(tmp_path, {**SMALL, ("2--Demo", "d"): np.array([[1, 1, 1, 1]])},
                 {s: {**c, ("2--Demo", "d"): [0]} for s, c in SMALL_COUNTED.items()})
    write_mat_gt(tmp_path / "other", SMALL, SMALL_COUNTED)
    (tmp_path / "other" / "wider_medium_val.mat").replace(tmp_path / "wider_medium_val.mat")
    with pytest.raises(UserError, match=r"wider_medium_val\.mat: field event_list: expected 3 "
                       "cells, found 2"):
        load_wider_mat(tmp_path)
    fewer = {k: v for k, v in SMALL.items() if k[1] != "p2"}
    write_mat_gt(tmp_path / "other", fewer, SMALL_COUNTED)
    write_mat_gt(tmp_path, SMALL, SMALL_COUNTED)
    (tmp_path / "other" / "wider_medium_val.mat").replace(tmp_path / "wider_medium_val.mat")
    with pytest.raises(UserError, match=r"wider_medium_val\.mat: fields event_list/file_list: "
                       r"expected the events and images of wider_face_val\.mat"):
        load_wider_mat(tmp_path)


# ---------------------------------------------------------------- bbx_gt text


BBX_GT = """0--Parade/0_Parade_marchingband_1_465.jpg
2
345 211 4 4 2 0 0 0 2 0 \n331 126 3 3 2 0 0 0 1 0
0--Parade/0_Parade_Parade_0_275.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Handshaking_1_9.jpg
1
10 20 30 40 0 0 0 1 0 0
"""


def test_bbx_gt(tmp_path: Path):
    path = tmp_path / "wider_face_val_bbx_gt.txt"
    path.write_text(BBX_GT)
    gt = load_wider_bbx_gt(path)
    assert gt.events == ("0--Parade", "1--Handshaking")
    assert gt.images == [("0--Parade", "0_Parade_marchingband_1_465"),
                         ("0--Parade", "0_Parade_Parade_0_275"),
                         ("1--Handshaking", "1_Handshaking_1_9")]
    np.testing.assert_array_equal(gt.boxes[gt.images[0]], [[345, 211, 4, 4], [331, 126, 3, 3]])
    # the placeholder of a 0-face image: one [0 0 0 0] box that never counts, as in the .mat
    np.testing.assert_array_equal(gt.boxes[gt.images[1]], [[0, 0, 0, 0]])
    assert [gt.count_faces(s) for s in SETTINGS] == [3, 3, 3]
    assert gt.attributes is not None
    assert gt.attributes[gt.images[2]].tolist() == [[0, 0, 0, 1, 0, 0]]
    # detections on the 0-face image are false positives, as the official tool scores them
    preds = {gt.images[1]: np.array([[50, 50, 10, 10, 1.0]]),
             gt.images[2]: np.array([[10, 20, 30, 40, 0.5]])}
    ev = scored(gt, preds)
    assert ev.proposals["easy"][t_index(1)] == 1 and ev.tp["easy"][t_index(1)] == 0


@pytest.mark.parametrize(("text", "match"), [
    ("0--Parade/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1--X/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n",
     r":4: face line 2 of 2 of 0--Parade/a: expected 10 numbers .* the count on line 2 says 2"),
    ("0--Parade/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n",
     r":4: image path: expected <event>/<name>.jpg.*more face lines follow"),
    ("0--Parade/a.jpg\ntwo\n", r":2: face count of 0--Parade/a: expected a whole number"),
    ("0--Parade/a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", r":3: face line 1 of 1 .* found '1 2 3 4"),
    ("0--Parade/a.jpg\n0\n", r":3: the all-zero line that follows a face count of 0"),
    ("0--Parade/a.jpg\n0\n1 0 0 0 0 0 0 0 0 0\n", r":3: .*expected the all-zero placeholder"),
    ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", r":1: image path: expected <event>/<name>.jpg"),
    ("0--Parade/a.jpg\n1\n1 2 3 4 0.5 0 0 0 0 0\n", r":3\.\.3: attributes .*whole numbers"),
    ("", r"no images"),
])
def test_bbx_gt_errors(tmp_path: Path, text: str, match: str):
    path = tmp_path / "bbx.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"bbx\.txt{match}" if match.startswith(":")
                       else match):
        load_wider_bbx_gt(path)


# ---------------------------------------------------------------- prediction files


def test_prediction_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    gt, preds = random_case(rng, n_images=6)
    preds = {k: np.c_[v[:, :4] + rng.random((len(v), 4)), rng.normal(size=len(v)) * 1e-3]
             for k, v in preds.items()}
    preds[next(iter(gt.boxes))] = np.zeros((0, 5))
    write_wider_predictions(tmp_path, preds)
    text = (tmp_path / gt.images[0][0] / f"{gt.images[0][1]}.txt").read_text()
    assert text.splitlines()[:2] == [f"{gt.images[0][1]}.jpg", "0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = read_wider_predictions(tmp_path, gt)
    assert back.keys() == preds.keys()
    for k, v in preds.items():
        np.testing.assert_array_equal(back[k], v.reshape(-1, 5))
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_and_unexpected_prediction_files(tmp_path: Path):
    gt = make_gt({A: [FACE], B: [FACE], ("1--X", "c"): [FACE]})
    write_wider_predictions(tmp_path, {A: np.array([[0, 0, 9, 9, 0.9]]),
                                       ("1--X", "zzz"): np.array([[0, 0, 9, 9, 0.9]])})
    with pytest.warns(WiderPredictionWarning, match="2 of 3 images have no prediction file") \
            as rec:
        preds = read_wider_predictions(tmp_path, gt)
    w = rec[0].message
    assert w.missing == [B, ("1--X", "c")]
    assert w.unexpected == [str(Path("1--X") / "zzz.txt")]
    assert list(preds) == [A]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no prediction file for any of the 3 ground-truth"):
        read_wider_predictions(empty, gt)
    with pytest.raises(UserError, match="not a folder"):
        read_wider_predictions(tmp_path / "absent", gt)


@pytest.mark.parametrize(("body", "match"), [
    ("a.jpg\n", r":2: box count: expected a whole number"),
    ("a.jpg\n1.5\n", r":2: box count: expected a whole number"),
    ("1\n1 2 3 4 0.5\n", r":2: box count: expected a whole number .*found .1 2 3 4 0.5."),
    ("a.jpg\n2\n1 2 3 4 0.5\n", r":3: box lines: line 2 says 2 boxes, found 1"),
    ("a.jpg\n1\n1 2 3 4 0.5\n\n5 6 7 8 0.1\n", r":5: box lines: line 2 says 1 boxes, found 2"),
    ("a.jpg\n2\n1 2 3 4 0.5\n1 2 3 4\n", r":4: box: expected 5 numbers 'x y w h score', found 4"),
    ("a.jpg\n1\n1 2 abc 4 0.5\n", r":3: width: expected a number, found 'abc'"),
    ("a.jpg\n2\n1 2 3 4 0.5\n1 2 3 4 nan\n", r":4: score: expected a finite number, found nan"),
    ("a.jpg\n1\ninf 2 3 4 0.5\n", r":3: x: expected a finite number, found inf"),
    ("a.jpg\n1\n1 2 -3 4 0.5\n", r":3: width: expected >= 0, found -3.0"),
    ("a.jpg\n1\n1 2 3 -4 0.5\n", r":3: height: expected >= 0, found -4.0"),
])
def test_prediction_file_errors(tmp_path: Path, body: str, match: str):
    gt = make_gt({A: [FACE]})
    (tmp_path / A[0]).mkdir()
    (tmp_path / A[0] / "a.txt").write_text(body)
    with pytest.raises(UserError, match=r"0--Parade/a\.txt" + match):
        read_wider_predictions(tmp_path, gt)


def test_blank_lines_are_ignored(tmp_path: Path):
    gt = make_gt({A: [FACE]})
    (tmp_path / A[0]).mkdir()
    (tmp_path / A[0] / "a.txt").write_text("a.jpg\n2\n\n0 0 9 9 0.9\n  \n1 1 5 5 0.1\n\n")
    np.testing.assert_array_equal(read_wider_predictions(tmp_path, gt)[A],
                                  [[0, 0, 9, 9, 0.9], [1, 1, 5, 5, 0.1]])


# ---------------------------------------------------------------- command line


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench eval")
    add_parser(parser.add_subparsers(dest="evaluator", required=True))
    return parser.parse_args(argv)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    write_mat_gt(tmp_path / "gt", SMALL, SMALL_COUNTED)
    gt = load_wider_mat(tmp_path / "gt")
    preds = {("0--Parade", "p1"): np.array([[0, 0, 9, 9, 0.9], [40, 0, 9, 9, 0.8],
                                            [100, 100, 9, 9, 0.95]]),
             ("1--Handshaking", "h1"): np.array([[10, 10, 20, 20, 0.7], [90, 10, 5, 5, 0.1]])}
    write_wider_predictions(tmp_path / "pred", preds)
    args = parse(["wider", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                  "--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "pr.svg")])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    expected = scored(gt, preds).summarize()
    for s in SETTINGS:
        assert f"wider.{s}.ap = {expected[s]:.6f}" in out
    assert "1 of 3 images have no prediction file" in err
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["metrics"] == {f"{s}.ap": expected[s] for s in SETTINGS}
    hard = next(c for c in saved["curves"] if c["name"] == "hard")
    assert len(hard["precision"]) == 1000
    assert hard["faces"] == 5
    assert (tmp_path / "pr.svg").read_text().lstrip().startswith("<?xml")

    args = parse(["wider", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                  "--settings", "hard"])
    assert args.func(args) == 0
    assert "wider.easy" not in capsys.readouterr().out
    args = parse(["wider", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path / "pred")])
    with pytest.raises(UserError, match="not a folder"):
        args.func(args)
