"""The official WIDER FACE evaluation transcribed loop by loop from its MATLAB code (read_pred.m,
norm_score.m, evaluation.m, boxoverlap.m, VOCap.m): slow, plain, and independent of
bench.evals.wider except for the ground-truth data class, so the fast evaluator can be checked
against it."""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from bench.evals.wider import ImageKey, WiderGroundTruth

THRESH_NUM = 1000


def read_pred(gt: WiderGroundTruth, predictions: Mapping[ImageKey, np.ndarray]
              ) -> dict[ImageKey, np.ndarray]:
    """Each ground-truth image's boxes sorted by score, descending; Python's sort is stable,
    as MATLAB's is."""
    pred_list = {}
    for key in gt.boxes:
        bbx = predictions.get(key)
        if bbx is None or len(bbx) == 0:
            continue
        bbx = np.asarray(bbx, dtype=float)
        s_index = sorted(range(len(bbx)), key=lambda k, b=bbx: -b[k, 4])
        pred_list[key] = bbx[s_index].copy()
    return pred_list


def norm_score(pred_list: dict[ImageKey, np.ndarray]) -> dict[ImageKey, np.ndarray]:
    max_score = float(np.finfo(np.float32).tiny)  # realmin('single')
    min_score = float(np.finfo(np.float32).max)  # realmax('single')
    for bbx in pred_list.values():
        for s in bbx[:, 4]:
            max_score = max(max_score, float(s))
            min_score = min(min_score, float(s))
    out = {}
    for key, bbx in pred_list.items():
        bbx = bbx.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            bbx[:, 4] = (bbx[:, 4] - min_score) / np.float64(max_score - min_score)
        out[key] = bbx
    return out


def boxoverlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, 0], b[0])
    y1 = np.maximum(a[:, 1], b[1])
    x2 = np.minimum(a[:, 2], b[2])
    y2 = np.minimum(a[:, 3], b[3])
    w = x2 - x1 + 1
    h = y2 - y1 + 1
    inter = w * h
    aarea = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    barea = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        o = inter / (aarea + barea - inter)
    o[w <= 0] = 0
    o[h <= 0] = 0
    return o


def matlab_max(values: np.ndarray) -> tuple[float, int]:
    """MATLAB's [m, i] = max(v): NaN skipped, first index of the maximum."""
    best, idx = math.nan, 0
    for i, v in enumerate(values):
        if not math.isnan(v) and (math.isnan(best) or v > best):
            best, idx = float(v), i
    return best, idx


def image_evaluation(pred_info: np.ndarray, gt_bbx: np.ndarray, ignore: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    pred_recall = np.zeros(len(pred_info))
    recall_list = np.zeros(len(gt_bbx))
    proposal_list = np.ones(len(pred_info))
    pred_info = pred_info.copy()
    gt_bbx = gt_bbx.copy()
    pred_info[:, 2] = pred_info[:, 0] + pred_info[:, 2]
    pred_info[:, 3] = pred_info[:, 1] + pred_info[:, 3]
    gt_bbx[:, 2] = gt_bbx[:, 0] + gt_bbx[:, 2]
    gt_bbx[:, 3] = gt_bbx[:, 1] + gt_bbx[:, 3]
    for h in range(len(pred_info)):
        overlap_list = boxoverlap(gt_bbx, pred_info[h, :4])
        max_overlap, idx = matlab_max(overlap_list)
        if max_overlap >= 0.5:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = np.count_nonzero(recall_list == 1)
    return pred_recall, proposal_list


def image_pr_info(pred_info: np.ndarray, proposal_list: np.ndarray, pred_recall: np.ndarray
                  ) -> np.ndarray:
    img_pr_info = np.zeros((THRESH_NUM, 2))
    for t in range(1, THRESH_NUM + 1):
        thresh = 1 - t / THRESH_NUM
        r_index = np.flatnonzero(pred_info[:, 4] >= thresh)
        if r_index.size == 0:
            img_pr_info[t - 1] = 0, 0
        else:
            r = r_index[-1]
            img_pr_info[t - 1, 0] = np.count_nonzero(proposal_list[:r + 1] == 1)
            img_pr_info[t - 1, 1] = pred_recall[r]
    return img_pr_info


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        a, b = mpre[i], mpre[i + 1]
        mpre[i] = b if math.isnan(a) else a if math.isnan(b) else max(a, b)
    ap = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            ap += (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def reference_image_pr_info(gt: WiderGroundTruth,
                            norm_pred_list: dict[ImageKey, np.ndarray], setting: str
                            ) -> tuple[dict[ImageKey, np.ndarray], int]:
    """Per image with boxes and predictions, the img_pr_info evaluation.m adds to the curve
    (1000 x [proposals, recalled]), and the setting's face count (count_face); the predictions
    as norm_score(read_pred(...)) leaves them."""
    per_image = {}
    count_face = 0
    for key, gt_bbx in gt.boxes.items():
        pred_info = norm_pred_list.get(key)
        keep_index = np.flatnonzero(gt.counted[setting][key]) + 1
        count_face += len(keep_index)
        if len(gt_bbx) == 0 or pred_info is None:
            continue
        ignore = np.zeros(len(gt_bbx))
        ignore[keep_index - 1] = 1
        pred_recall, proposal_list = image_evaluation(pred_info, gt_bbx, ignore)
        per_image[key] = image_pr_info(pred_info, proposal_list, pred_recall)
    return per_image, count_face


def reference_wider(gt: WiderGroundTruth, predictions: Mapping[ImageKey, np.ndarray],
                    settings: Sequence[str] = ("easy", "medium", "hard")) -> dict[str, dict]:
    """Per setting: ap, precision, recall, proposals and tp (1000 thresholds each)."""
    norm_pred_list = norm_score(read_pred(gt, predictions))
    out = {}
    for setting in settings:
        per_image, count_face = reference_image_pr_info(gt, norm_pred_list, setting)
        org_pr_cruve = np.zeros((THRESH_NUM, 2))
        for img_pr_info in per_image.values():
            org_pr_cruve += img_pr_info
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = org_pr_cruve[:, 1] / org_pr_cruve[:, 0]
            recall = org_pr_cruve[:, 1] / np.float64(count_face)
        out[setting] = {"ap": voc_ap(list(recall), list(precision)), "precision": precision,
                        "recall": recall, "proposals": org_pr_cruve[:, 0],
                        "tp": org_pr_cruve[:, 1], "faces": count_face}
    return out
