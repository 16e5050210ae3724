"""WIDER FACE validation scoring with the semantics of the official MATLAB tool (eval_tools:
wider_eval.m, read_pred.m, norm_score.m, evaluation.m, boxoverlap.m, VOCap.m), so the APs here are
the ones papers report. The Python ports of that tool drift from it in small ways (no per-file sort,
per-image normalisation, a different IoU); every rule below follows the MATLAB code.

Rules, in the tool's order:
1. Each image's predictions are sorted by score, descending, keeping file order among equal scores
   (MATLAB's `sort(..., 'descend')` is stable).
2. Scores are normalised once over every prediction of every ground-truth image,
   s' = (s - min) / (max - min). As in norm_score.m the running max starts at realmin('single')
   and the running min at realmax('single'): a set of only negative scores keeps max ~1.2e-38.
   When all scores are equal the tool divides 0 by 0; every score becomes NaN and no prediction
   reaches any threshold (AP 0). We do the same and warn.
3. Per setting (easy, medium, hard) and image: the image's counted faces (its gt_list) add to the
   face count even when it has no prediction; an image with no ground-truth box or no prediction
   is then skipped, so predictions on an image without boxes are neither true nor false
   positives. Boxes become x2 = x + w, y2 = y + h; IoU uses the +1 pixel convention and the
   tool's exact arithmetic. Each prediction, in sorted order, takes the box of maximum IoU over all
   the image's boxes (first index on ties, NaN ignored as MATLAB's `max` does). At IoU >= 0.5 a
   box that does not count makes the prediction ignored (no proposal); a counted box not yet
   recalled becomes recalled; a second hit on it stays a proposal, i.e. a false positive.
4. At thresholds 1 - t/1000 (t = 1..1000) the predictions with normalised score >= threshold
   give the proposals (non-ignored ones) and true positives (recalled faces); summed over images,
   precision = tp / proposals and recall = tp / faces, with 0/0 = NaN as in MATLAB.
5. AP: VOC all-points area with the NaN-ignoring envelope (bench.evals.curves.ap_all_points).

The tool sums each image's counts at the 1000 thresholds (img_pr_info); `WiderEval.image_rows`
keeps that share of every image, so a paired test can resample images (`per_example`).

Because the box a prediction picks does not depend on earlier predictions, the greedy walk is
vectorised: a prediction is ignored or not on its own, and it recalls a face when it is the
first prediction of its image to pick that counted face. Summed over images, the counts at a
threshold are then the counts over all predictions scoring at or above it (the sorted order makes
those a prefix of every image), which a histogram over the 1000 thresholds gives at once.

File choices, following read_pred.m where it decides:
- A missing prediction file means no detections for that image; the reader warns with the count
  (WiderPredictionWarning). A file for an image that is not in the ground truth is never read by
  the tool; we ignore it too and name it in the same warning. A prediction folder holding a file
  for no ground-truth image at all is an error: it is the wrong folder.
- Line 1 (the image name) is not checked, as in the tool. Line 2 is the count N; exactly N
  non-blank lines of exactly five numbers must follow (the tool would read the first five numbers
  of the first N lines and ignore the rest; a disagreement is almost always a writer's bug, so it
  is an error here). Scores must be finite and widths and heights >= 0.
- Ground-truth boxes are used as stored, including the few zero- or negative-size boxes of the
  official files, with the tool's arithmetic. Like MATLAB's, it overflows to inf and NaN silently
  (scores of +-1e308, say), so numpy's overflow warnings are muted there.
- In-memory predictions: an image absent from the mapping has no detections, silently; a key
  that is not a ground-truth image is ignored with a warning.
"""

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
from pydantic import Field

from bench.errors import UserError
from bench.evals.adapters import FaceDetector, Mode, Size
from bench.evals.curves import PRCurve, ap_all_points
from bench.evals.detection import (
    DetectionScales,
    ModeScored,
    check_images,
    direction,
    mode_metrics,
    row_count,
    row_indices,
    score_modes,
)
from bench.evals.evaluator import EvalResult, EvalSetting, Evaluator, PerExample
from bench.evals.io import read_lines, shown
from bench.evals.matfile import load_mat
from bench.schema import InputPath
from bench.util.atomic import enter_dir, write_text

ImageKey = tuple[str, str]
SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000
IOU_THRESHOLD = 0.5
ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_PRED_FIELDS = ("x", "y", "width", "height", "score")
_VAL_FILE = "wider_face_val.mat"


class WiderEvalConfig(DetectionScales):
    """Scoring on a WIDER-layout validation split with the official protocol."""

    root: InputPath | None = Field(None, description="default: the training data's root")


def thresholds() -> np.ndarray:
    """The tool's 1000 score thresholds, 1 - t/1000 for t = 1..1000, computed as it does."""
    return 1 - np.arange(1, THRESH_NUM + 1, dtype=float) / THRESH_NUM


class WiderPredictionWarning(UserWarning):
    """Prediction files that are missing (scored as no detections) or that name an image outside
    the ground truth (ignored, as the official tool never opens them)."""

    def __init__(self, message: str, missing: Sequence[ImageKey], unexpected: Sequence[str]):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)


@dataclass(frozen=True)
class WiderGroundTruth:
    """Boxes per image and, per setting, which faces count; every other face of an image is an
    ignore region in that setting.

    boxes: (event, image name without extension) -> N x 4 [x y w h], in the official image order.
    counted: setting -> image -> boolean mask of length N (the official gt_list, 1-based there).
    attributes: image -> N x 6 integer labels (ATTRIBUTES order) when the source carries them, so
    a caller can build its own `counted` (dataclasses.replace) from them.
    """

    events: tuple[str, ...]
    boxes: dict[ImageKey, np.ndarray]
    counted: dict[str, dict[ImageKey, np.ndarray]]
    attributes: dict[ImageKey, np.ndarray] | None = None

    def __post_init__(self) -> None:
        for key, b in self.boxes.items():
            if b.ndim != 2 or b.shape[1] != 4:
                raise UserError(f"ground truth {key[0]}/{key[1]}: boxes have shape {b.shape}, "
                                "expected N x 4 [x y w h]")
        for setting, masks in self.counted.items():
            for key, b in self.boxes.items():
                mask = masks.get(key)
                if mask is None or mask.dtype != bool or mask.shape != (len(b),):
                    raise UserError(f"ground truth setting {shown(setting)}, {key[0]}/{key[1]}: "
                                    f"expected a boolean mask of length {len(b)}")

    @property
    def images(self) -> list[ImageKey]:
        return list(self.boxes)

    def count_faces(self, setting: str) -> int:
        masks = self.counted[setting]
        return int(sum(int(masks[k].sum()) for k in self.boxes))


# ---------------------------------------------------------------- official .mat ground truth


def _loadmat(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path}: not found; a WIDER ground-truth folder holds {_VAL_FILE} and "
                        "wider_{easy,medium,hard}_val.mat (eval_tools/ground_truth of the "
                        "official evaluation code)")
    return load_mat(path, "not a readable MATLAB v5 file")


def _cells(mat: dict, path: Path, field: str, length: int | None = None) -> list:
    """A MATLAB cell array as a flat list, or a UserError saying what was expected."""
    value = mat.get(field)
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise UserError(f"{path}: field {field}: expected a cell array, "
                        f"found {'nothing' if value is None else type(value).__name__}")
    cells = list(value.ravel())
    if length is not None and len(cells) != length:
        raise UserError(f"{path}: field {field}: expected {length} cells, found {len(cells)}")
    return cells


def _cell_text(value: object, path: Path, where: str) -> str:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        return str(value.ravel()[0])
    raise UserError(f"{path}: {where}: expected a text string")


def _image_counts(cells: list, path: Path, field: str) -> list[int]:
    for i, cell in enumerate(cells):
        if not isinstance(cell, np.ndarray) or cell.dtype != object:
            raise UserError(f"{path}: field {field}, event {i + 1}: expected a cell array of "
                            "images")
    return [cell.size for cell in cells]


def _nested(cells: list, path: Path, field: str, sizes: list[int]) -> list[list]:
    """A cell of cells (per event, per image), checked against the image counts."""
    out = []
    for i, (cell, n) in enumerate(zip(cells, sizes, strict=True)):
        if not isinstance(cell, np.ndarray) or cell.dtype != object or cell.size != n:
            raise UserError(f"{path}: field {field}, event {i + 1}: expected a cell array of "
                            f"{n} images")
        out.append(list(cell.ravel()))
    return out


def load_wider_mat(gt_dir: Path | str) -> WiderGroundTruth:
    """The official evaluation ground truth: wider_face_val.mat (events, images, boxes) and
    wider_{easy,medium,hard}_val.mat (gt_list: 1-based indices of the faces that count)."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise UserError(f"{gt_dir}: not a folder; expected the folder holding {_VAL_FILE} and "
                        "wider_{easy,medium,hard}_val.mat")
    val_path = gt_dir / _VAL_FILE
    val = _loadmat(val_path)
    event_cells = _cells(val, val_path, "event_list")
    events = tuple(_cell_text(c, val_path, f"event_list, event {i + 1}")
                   for i, c in enumerate(event_cells))
    file_cells = _cells(val, val_path, "file_list", len(events))
    sizes = _image_counts(file_cells, val_path, "file_list")
    names = _nested(file_cells, val_path, "file_list", sizes)
    keys = [[(event, _cell_text(n, val_path, f"file_list, event {i + 1}, image {j + 1}"))
             for j, n in enumerate(per_event)]
            for i, (event, per_event) in enumerate(zip(events, names, strict=True))]
    box_cells = _nested(_cells(val, val_path, "face_bbx_list", len(events)), val_path,
                        "face_bbx_list", sizes)
    boxes: dict[ImageKey, np.ndarray] = {}
    for i, (per_event, event_keys) in enumerate(zip(box_cells, keys, strict=True)):
        for j, (b, key) in enumerate(zip(per_event, event_keys, strict=True)):
            if not isinstance(b, np.ndarray) or b.dtype.kind not in "iuf" or (
                    b.size and (b.ndim != 2 or b.shape[1] != 4)):
                raise UserError(f"{val_path}: field face_bbx_list, event {i + 1}, image {j + 1}: "
                                "expected an N x 4 numeric matrix [x y w h]")
            if key in boxes:
                raise UserError(f"{val_path}: field file_list: image {key[0]}/{key[1]} "
                                "appears twice")
            boxes[key] = b.astype(float).reshape(-1, 4)

    counted: dict[str, dict[ImageKey, np.ndarray]] = {}
    for setting in SETTINGS:
        path = gt_dir / f"wider_{setting}_val.mat"
        mat = _loadmat(path)
        same_images = [_cell_text(c, path, "event_list") for c in
                       _cells(mat, path, "event_list", len(events))] == list(events)
        same_images = same_images and _image_counts(
            _cells(mat, path, "file_list", len(events)), path, "file_list") == sizes
        if not same_images:
            raise UserError(f"{path}: fields event_list/file_list: expected the events and "
                            f"images of {val_path.name}")
        lists = _nested(_cells(mat, path, "gt_list", len(events)), path, "gt_list", sizes)
        masks: dict[ImageKey, np.ndarray] = {}
        for i, (per_event, event_keys) in enumerate(zip(lists, keys, strict=True)):
            for j, (g, key) in enumerate(zip(per_event, event_keys, strict=True)):
                masks[key] = _gt_list_mask(g, len(boxes[key]), path, i, j)
        counted[setting] = masks
    return WiderGroundTruth(events, boxes, counted)


def _gt_list_mask(g: object, n: int, path: Path, event: int, image: int) -> np.ndarray:
    where = f"{path}: field gt_list, event {event + 1}, image {image + 1}"
    if not isinstance(g, np.ndarray) or g.dtype.kind not in "iuf":
        raise UserError(f"{where}: expected a numeric vector of 1-based face indices")
    values = g.ravel()
    if values.size and not (np.isfinite(values).all() and values.min() >= 1
                            and values.max() <= n and np.array_equal(values, np.round(values))):
        raise UserError(f"{where}: expected 1-based face indices in 1..{n}, found "
                        f"{shown(values.tolist())}")
    idx = values.astype(np.int64)
    if np.unique(idx).size != idx.size:
        raise UserError(f"{where}: face indices repeat: {shown(idx.tolist())}")
    mask = np.zeros(n, dtype=bool)
    mask[idx - 1] = True
    return mask


# ---------------------------------------------------------------- bbx_gt text annotations

_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_FACE_LINE = re.compile(rf"\s*{_NUMBER}(\s+{_NUMBER}){{9}}\s*")


def load_wider_bbx_gt(txt_path: Path | str,
                      settings: Sequence[str] = SETTINGS) -> WiderGroundTruth:
    """wider_face_{train,val}_bbx_gt.txt: an image path line, a face count line, then one line
    `x1 y1 w h blur expression illumination invalid occlusion pose` per face.

    Every face counts in every setting: filter with `attributes` (e.g. invalid == 0) through
    dataclasses.replace(gt, counted=...). An image with 0 faces carries one all-zero line; it is
    kept as one [0 0 0 0] box that never counts, as the official .mat files store such images, so
    detections there are false positives exactly as in the official tool.
    """
    txt_path = Path(txt_path)
    lines = read_lines(txt_path, "a WIDER bbx_gt text file")
    boxes: dict[ImageKey, np.ndarray] = {}
    attributes: dict[ImageKey, np.ndarray] = {}
    empty: set[ImageKey] = set()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        key = _image_path(txt_path, i + 1, lines[i], boxes)
        count_text = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not _is_count(count_text):
            raise UserError(f"{txt_path}:{i + 2}: face count of {key[0]}/{key[1]}: expected a "
                            f"whole number, found {shown(count_text or 'nothing')}")
        count = int(count_text)
        rows = []
        for k in range(max(count, 1)):
            n = i + 3 + k
            line = lines[n - 1] if n - 1 < len(lines) else ""
            if not _FACE_LINE.fullmatch(line):
                what = (f"face line {k + 1} of {count}" if count else
                        "the all-zero line that follows a face count of 0")
                raise UserError(f"{txt_path}:{n}: {what} of {key[0]}/{key[1]}: expected 10 "
                                f"numbers (x1 y1 w h blur expression illumination invalid "
                                f"occlusion pose), found {shown(line.strip() or 'nothing')}; the "
                                f"count on line {i + 2} says {count}")
            rows.append([float(v) for v in line.split()])
        values = np.array(rows)
        if count == 0 and values.any():
            raise UserError(f"{txt_path}:{i + 3}: {key[0]}/{key[1]} has a face count of 0: "
                            "expected the all-zero placeholder line, found non-zero numbers")
        if not np.array_equal(values[:, 4:], np.round(values[:, 4:])):
            raise UserError(f"{txt_path}:{i + 3}..{i + 2 + len(rows)}: attributes of "
                            f"{key[0]}/{key[1]}: expected whole numbers")
        boxes[key] = values[:, :4]
        attributes[key] = values[:, 4:].astype(np.int64)
        if count == 0:
            empty.add(key)
        i += 2 + len(rows)
    if not boxes:
        raise UserError(f"{txt_path}: no images; expected blocks of an image path line, a face "
                        "count line and the face lines")
    counted = {s: {k: np.full(len(b), k not in empty) for k, b in boxes.items()}
               for s in settings}
    events = tuple(dict.fromkeys(event for event, _ in boxes))
    return WiderGroundTruth(events, boxes, counted, attributes)


def _is_count(text: str) -> bool:
    """ASCII digits, at most 18 of them (an int64; longer is junk, and Python refuses to parse
    more than 4,300)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _image_path(txt_path: Path, n: int, line: str, seen: Mapping[ImageKey, object]) -> ImageKey:
    text = line.strip()
    event, _, file = text.partition("/")
    if not file or _FACE_LINE.fullmatch(text):
        hint = (" (more face lines follow than the previous image's count says)"
                if _FACE_LINE.fullmatch(text) else "")
        raise UserError(f"{txt_path}:{n}: image path: expected <event>/<name>.jpg, found "
                        f"{shown(text)}{hint}")
    key = (event, Path(file).stem)
    if key in seen:
        raise UserError(f"{txt_path}:{n}: image path: {text} appears twice")
    return key


# ---------------------------------------------------------------- predictions


def _first_bad_row(values: np.ndarray) -> tuple[int, str] | None:
    """The first row that is not a finite box with width and height >= 0, and why."""
    finite = np.isfinite(values)
    bad = ~finite.all(axis=1) | np.any(np.where(finite[:, 2:4], values[:, 2:4], 0) < 0, axis=1)
    rows = np.flatnonzero(bad)
    if not rows.size:
        return None
    r = int(rows[0])
    for col, field in enumerate(_PRED_FIELDS):
        v = float(values[r, col])
        if not np.isfinite(v):
            return r, f"{field}: expected a finite number, found {shown(v)}"
    col = 2 if values[r, 2] < 0 else 3
    return r, f"{_PRED_FIELDS[col]}: expected >= 0, found {float(values[r, col])!r}"


def _check_predictions(key: ImageKey, boxes: object) -> np.ndarray:
    values = np.asarray(boxes, dtype=float)
    if values.size == 0:
        return values.reshape(0, 5)
    if values.ndim != 2 or values.shape[1] != 5:
        raise UserError(f"predictions for {key[0]}/{key[1]}: expected an N x 5 array "
                        f"[x y w h score], found shape {values.shape}")
    bad = _first_bad_row(values)
    if bad is not None:
        raise UserError(f"predictions for {key[0]}/{key[1]}, row {bad[0] + 1}: {bad[1]}")
    return values


def _read_prediction_file(path: Path) -> np.ndarray:
    lines = read_lines(path, "a WIDER prediction file")
    count_text = lines[1].strip() if len(lines) > 1 else ""
    if not _is_count(count_text):
        raise UserError(f"{path}:2: box count: expected a whole number (line 1 is the image "
                        f"name, line 2 the number of boxes), found "
                        f"{shown(count_text or 'nothing')}")
    count = int(count_text)
    body = [(n, line.split()) for n, line in enumerate(lines[2:], start=3) if line.strip()]
    if len(body) != count:
        where = body[count][0] if len(body) > count else len(lines)
        raise UserError(f"{path}:{where}: box lines: line 2 says {count} boxes, "
                        f"found {len(body)} box lines")
    for n, fields in body:
        if len(fields) != 5:
            raise UserError(f"{path}:{n}: box: expected 5 numbers 'x y w h score', "
                            f"found {len(fields)} fields")
    try:
        values = np.array([fields for _, fields in body], dtype=float).reshape(-1, 5)
    except ValueError:
        for n, fields in body:
            for field, text in zip(_PRED_FIELDS, fields, strict=True):
                try:
                    float(text)
                except ValueError:
                    raise UserError(f"{path}:{n}: {field}: expected a number, "
                                    f"found {shown(text)}") from None
        raise
    bad = _first_bad_row(values)
    if bad is not None:
        raise UserError(f"{path}:{body[bad[0]][0]}: {bad[1]}")
    return values


def read_wider_predictions(pred_dir: Path | str, gt: WiderGroundTruth
                           ) -> dict[ImageKey, np.ndarray]:
    """Read `<pred_dir>/<event>/<name>.txt` for every ground-truth image, in file order (the
    evaluator sorts). Missing files and files of unknown images: WiderPredictionWarning."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: not a folder; expected <event>/<image name>.txt files")
    predictions: dict[ImageKey, np.ndarray] = {}
    missing: list[ImageKey] = []
    for key in gt.boxes:
        path = pred_dir / key[0] / f"{key[1]}.txt"
        if path.is_file():
            predictions[key] = _read_prediction_file(path)
        else:
            missing.append(key)
    unexpected = sorted(str(p.relative_to(pred_dir)) for p in pred_dir.glob("*/*.txt")
                        if (p.parent.name, p.stem) not in gt.boxes)
    if missing and not predictions:
        event, name = missing[0]
        raise UserError(f"{pred_dir}: no prediction file for any of the {len(missing)} "
                        f"ground-truth images; expected <event>/<image name>.txt files, e.g. "
                        f"{event}/{name}.txt")
    _warn_coverage(missing, unexpected, len(gt.boxes), stacklevel=3)
    return predictions


def _warn_coverage(missing: Sequence[ImageKey], unexpected: Sequence[str], total: int,
                   stacklevel: int) -> None:
    parts = []
    if missing:
        listed = ", ".join(f"{e}/{n}" for e, n in missing[:3])
        parts.append(f"{len(missing)} of {total} images have no prediction file and count as "
                     f"no detections ({listed}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        listed = ", ".join(unexpected[:3])
        parts.append(f"{len(unexpected)} predictions name no ground-truth image and are "
                     f"ignored ({listed}{', ...' if len(unexpected) > 3 else ''})")
    if parts:
        warnings.warn(WiderPredictionWarning("; ".join(parts), missing, unexpected),
                      stacklevel=stacklevel)


def _format_number(v: float) -> str:
    return repr(float(v))


def write_wider_predictions(pred_dir: Path | str,
                            predictions: Mapping[ImageKey, np.ndarray]) -> None:
    """Write the official per-image files (each whole or not at all), for the MATLAB tool;
    `pred_dir` and its event folders are refused when they are links, never written through."""
    pred_dir = enter_dir(Path(pred_dir))
    events: dict[str, Path] = {}  # each entered once, not once per image
    for key, boxes in predictions.items():
        values = _check_predictions(key, boxes)
        if key[0] not in events:
            events[key[0]] = enter_dir(pred_dir / key[0])
        body = "".join(" ".join(_format_number(v) for v in row) + "\n" for row in values)
        write_text(events[key[0]] / f"{key[1]}.txt", f"{key[1]}.jpg\n{len(values)}\n{body}")


# ---------------------------------------------------------------- evaluation


def _best_gt(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each prediction the index and IoU of its best box, with boxoverlap.m's arithmetic
    (inputs [x y w h]; first index on ties; NaN overlaps never win, as in MATLAB's max)."""
    gx1, gy1 = gt[:, 0], gt[:, 1]
    px1, py1 = pred[:, 0:1], pred[:, 1:2]
    with np.errstate(over="ignore"):
        gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
        px2, py2 = px1 + pred[:, 2:3], py1 + pred[:, 3:4]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # MATLAB: inf, NaN
        w = np.minimum(gx2, px2) - np.maximum(gx1, px1) + 1
        h = np.minimum(gy2, py2) - np.maximum(gy1, py1) + 1
        inter = w * h
        g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
        p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
        overlap = inter / (g_area + p_area - inter)
    overlap[(w <= 0) | (h <= 0)] = 0
    overlap[np.isnan(overlap)] = -np.inf
    idx = np.argmax(overlap, axis=1)
    return idx, overlap[np.arange(len(pred)), idx]


def _normalise(scores: Iterable[np.ndarray]) -> tuple[float, float]:
    """norm_score.m's bounds: running max from realmin('single'), min from realmax('single')."""
    hi, lo = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
    for s in scores:
        if s.size:
            hi, lo = max(hi, float(s.max())), min(lo, float(s.min()))
    return lo, hi


def pr_curve(setting: str, proposals: np.ndarray, tp: np.ndarray, faces: float) -> PRCurve:
    """The PR curve and AP of counts at the 1000 thresholds, as evaluation.m makes them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / proposals
        recall = tp / np.float64(faces)
    return PRCurve(setting, recall, precision, ap_all_points(recall, precision), thresholds(),
                   {"faces": faces})


def image_counts(values: Sequence[object]) -> np.ndarray:
    """An image row's numbers (`WiderEval.image_rows`: faces, proposals, recalled): its faces,
    then how many of its proposals and of its recalled faces first reach each threshold; summed
    over images and accumulated over thresholds, these are the tool's counts. TypeError or
    ValueError for a row that is not one."""
    faces, proposals, recalled = values
    counts = [np.asarray([row_count(faces, "faces")], dtype=np.int64)]
    for name, found in (("proposals", proposals), ("recalled", recalled)):
        counts.append(np.bincount(row_indices(found, THRESH_NUM, name), minlength=THRESH_NUM))
    return np.concatenate(counts)


def ap_of_counts(counts: np.ndarray) -> float:
    """The AP of images' `image_counts` rows (or of their sums): what the tool reports for
    those images at the thresholds their scores were normalised to."""
    total = np.asarray(counts.sum(axis=0)).ravel()
    faces, proposals, recalled = total[0], total[1:THRESH_NUM + 1], total[THRESH_NUM + 1:]
    return pr_curve("", np.cumsum(proposals), np.cumsum(recalled), faces).ap


class WiderEval:
    """WIDER FACE AP per setting, in the style of COCOeval: evaluate(), accumulate(),
    summarize(). `curves[setting]` is the 1000-point PR curve with its thresholds; `proposals`
    and `tp` hold the per-threshold counts the curve is made of. After evaluate(), `scores`,
    `ignored[setting]` and `recalled[setting]` describe every scored prediction in the tool's
    walk order (images in ground-truth order, each image's predictions sorted), `image_of` the
    index of its image; after accumulate(), `first` the threshold it first reaches
    (THRESH_NUM: none) and `image_rows(setting)` each image's share of the counts."""

    def __init__(self, gt: WiderGroundTruth, predictions: Mapping[ImageKey, object],
                 settings: Sequence[str] = SETTINGS):
        unknown = [s for s in settings if s not in gt.counted]
        if unknown or not settings:
            raise UserError(f"settings {list(settings)}: expected some of {list(gt.counted)}")
        self.gt = gt
        self.settings = tuple(settings)
        self.sorted_predictions: dict[ImageKey, np.ndarray] = {}
        for key, boxes in predictions.items():
            if key in gt.boxes:
                values = _check_predictions(key, boxes)
                self.sorted_predictions[key] = values[np.argsort(-values[:, 4], kind="stable")]
        unexpected = [f"{e}/{n}" for e, n in predictions if (e, n) not in gt.boxes]
        _warn_coverage([], unexpected, len(gt.boxes), stacklevel=3)
        self.scores = np.zeros(0)
        self.image_of = np.zeros(0, dtype=np.int64)
        self.first = np.zeros(0, dtype=np.int64)
        self.ignored: dict[str, np.ndarray] = {}
        self.recalled: dict[str, np.ndarray] = {}
        self.proposals: dict[str, np.ndarray] = {}
        self.tp: dict[str, np.ndarray] = {}
        self.curves: dict[str, PRCurve] = {}
        self._evaluated = False

    def evaluate(self) -> None:
        """Match every prediction of every image with boxes; mark, per setting, the ignored
        predictions and those that recall a face for the first time."""
        lo, hi = _normalise(p[:, 4] for p in self.sorted_predictions.values())
        if self.sorted_predictions and hi == lo:
            warnings.warn(f"all {sum(map(len, self.sorted_predictions.values()))} prediction "
                          "scores are equal: the official normalisation divides 0 by 0, so no "
                          "prediction reaches any threshold and every AP is 0", stacklevel=2)
        scores, best, overlaps, images = [], [], [], []
        offsets = np.cumsum([0] + [len(b) for b in self.gt.boxes.values()])
        for image, (offset, (key, boxes)) in enumerate(zip(offsets[:-1], self.gt.boxes.items(),
                                                           strict=True)):
            pred = self.sorted_predictions.get(key)
            if pred is None or not len(pred) or not len(boxes):
                continue
            idx, iou = _best_gt(boxes, pred)
            images.append(np.full(len(pred), image))
            with np.errstate(over="ignore", invalid="ignore"):  # as MATLAB: inf, NaN
                scores.append((pred[:, 4] - lo) / (hi - lo))
            best.append(idx + offset)
            overlaps.append(iou)
        self.scores = np.concatenate(scores) if scores else np.zeros(0)
        self.image_of = np.concatenate(images) if images else np.zeros(0, dtype=np.int64)
        best_gt = np.concatenate(best) if best else np.zeros(0, dtype=np.int64)
        matched = np.concatenate(overlaps) >= IOU_THRESHOLD if overlaps else np.zeros(0, bool)
        for s in self.settings:
            masks = self.gt.counted[s]
            counted = np.concatenate([np.zeros(0, bool)] + [masks[k] for k in self.gt.boxes])
            hit_counted = counted[best_gt]
            self.ignored[s] = matched & ~hit_counted
            hits = np.flatnonzero(matched & hit_counted)
            _, first = np.unique(best_gt[hits], return_index=True)
            recalled = np.zeros(len(best_gt), dtype=bool)
            recalled[hits[first]] = True
            self.recalled[s] = recalled
        self._evaluated = True

    def accumulate(self) -> None:
        """Counts at each threshold, then precision, recall and AP per setting."""
        if not self._evaluated:
            self.evaluate()
        # index of the first (highest) threshold each score reaches; THRESH_NUM for none (NaN)
        passed = np.searchsorted(thresholds()[::-1], self.scores, side="right")
        first = np.where(np.isnan(self.scores), THRESH_NUM, THRESH_NUM - passed)
        self.first = first
        for s in self.settings:
            proposals = np.cumsum(np.bincount(first[~self.ignored[s]],
                                              minlength=THRESH_NUM + 1)[:THRESH_NUM])
            tp = np.cumsum(np.bincount(first[self.recalled[s]],
                                       minlength=THRESH_NUM + 1)[:THRESH_NUM])
            self.proposals[s], self.tp[s] = proposals, tp
            self.curves[s] = pr_curve(s, proposals, tp, self.gt.count_faces(s))

    def image_rows(self, setting: str) -> list[dict[str, Any]]:
        """Each ground-truth image's share of `setting`'s counts, a row each (the official
        tool's per-image img_pr_info, which it sums): its counted faces, and the index of the
        first threshold each of its proposals (`proposals`) and each prediction recalling a
        face (`recalled`) reaches, those reaching none left out. Summed over every image they
        give `proposals` and `tp`; over a resample of the images, that resample's AP at the
        thresholds the whole set's normalisation gave (`image_counts`, `ap_of_counts`)."""
        if setting not in self.curves:
            self.accumulate()
        reached = self.first < THRESH_NUM
        proposals = reached & ~self.ignored[setting]
        recalled = reached & self.recalled[setting]
        images = np.arange(len(self.gt.boxes))
        starts = np.searchsorted(self.image_of, images, side="left")
        ends = np.searchsorted(self.image_of, images, side="right")
        masks = self.gt.counted[setting]
        return [{"setting": setting, "event": key[0], "image": key[1],
                 "faces": int(masks[key].sum()),
                 "proposals": self.first[start:end][proposals[start:end]].tolist(),
                 "recalled": self.first[start:end][recalled[start:end]].tolist()}
                for key, start, end in zip(self.gt.boxes, starts, ends, strict=True)]

    def summarize(self, verbose: bool = False) -> dict[str, float]:
        """AP per setting; printed only when `verbose`."""
        if not self.curves:
            self.accumulate()
        metrics = {s: self.curves[s].ap for s in self.settings}
        if verbose:
            for s, ap in metrics.items():
                print(f"{s:<7} AP {ap:.4f}")
        return metrics


# ---------------------------------------------------------------- the evaluator


class WiderEvaluator:
    """A face detector on the val split of a WIDER FACE root: per mode, the official
    per-image prediction files (`predictions_<mode>/` in the work folder), the APs and PR
    curves of the three settings, and the ms each image took."""

    name = "wider"
    config_model = WiderEvalConfig
    needs = FaceDetector

    def higher_is_better(self, metric: str) -> bool | None:
        return direction(metric, lambda name: name in SETTINGS)

    def metrics(self, config: WiderEvalConfig) -> list[str]:
        return mode_metrics(config, SETTINGS)

    def is_proxy(self, config: WiderEvalConfig) -> bool:
        return False  # no `proxy:` key: a suite on proxy images says so in its report notes

    def per_example(self, metric: str) -> PerExample | None:
        """`<mode>.<setting>` AP from the per-image rows (`WiderEval.image_rows`): the tool sums
        each image's counts at its 1000 thresholds, so a resample of images is a weighted sum of
        those counts. The thresholds stay where the whole set's score normalisation put them:
        a resample reweights the images the tool scored; renormalising would move every
        image's counts with whichever image holds the extreme score."""
        mode, _, name = metric.partition(".")
        if mode not in get_args(Mode) or name not in SETTINGS:
            return None
        return PerExample(mode, ("event", "image"), ("faces", "proposals", "recalled"),
                          ap_of_counts, only=("setting", name), expand=image_counts,
                          summed=True)

    def inputs(self, config: WiderEvalConfig, data_root: str | None) -> dict[str, str]:
        """The ground truth and the val images: the only parts of the root scoring reads."""
        root = _val_root(config, data_root)
        return {"ground_truth": str(root / "eval_tools" / "ground_truth"),
                "images": str(root / "WIDER_val" / "images")}

    def check(self, config: WiderEvalConfig, data_root: str | None) -> None:
        _, paths, listed_in = _val_set(config, data_root)
        check_images(paths, listed_in)

    def evaluate(self, config: WiderEvalConfig, model: FaceDetector,
                 setting: EvalSetting) -> EvalResult:
        gt, paths, listed_in = _val_set(config, setting.data_root)

        def score(mode: Mode, size: Size) -> ModeScored:
            dets, took = model.detect(paths, mode, size, listed_in)
            predictions = {key: np.c_[d[:, :2], d[:, 2:4] - d[:, :2] + 1, d[:, 4]]
                           for key, d in zip(gt.images, dets, strict=True)}
            write_wider_predictions(setting.workdir / f"predictions_{mode}", predictions)
            evaluator = WiderEval(gt, predictions)
            return ModeScored(evaluator.summarize(), evaluator.curves, took,
                              [row for s in SETTINGS for row in evaluator.image_rows(s)])

        return score_modes(config, score)


def _val_root(config: WiderEvalConfig, data_root: str | None) -> Path:
    """The WIDER root to score on: the config's, else the run's training data's."""
    root = config.root or data_root
    if root is None:
        raise UserError("wider: give the WIDER FACE root (`root:`); this family's runs have no "
                        "training data root to default to")
    return Path(root)


def _val_set(config: WiderEvalConfig, data_root: str | None
             ) -> tuple[WiderGroundTruth, list[Path], str]:
    """The val ground truth, the path of each of its images and where they are listed."""
    root = _val_root(config, data_root)
    listed_in = root / "eval_tools" / "ground_truth"
    gt = load_wider_mat(listed_in)
    images = root / "WIDER_val" / "images"
    return gt, [images / e / f"{n}.jpg" for e, n in gt.images], str(listed_in)


EVALUATOR: Evaluator[WiderEvalConfig, FaceDetector] = WiderEvaluator()
