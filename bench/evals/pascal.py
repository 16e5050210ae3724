"""Pascal Faces scored exactly as the face-eval toolbox scores it (Mathias, Benenson, Pedersoli,
Van Gool, "Face detection without bells and whistles", ECCV 2014: plot_AP.py, VOCpr.py,
database.py, util.py), with loaders and writers for its files and a pycocotools cross-check.

The rules, each as the toolbox's code has it:

- A face with |x2 - x1| < 30 or |y2 - y1| < 30 (no +1), or with its ignore flag set (any non-zero
  value; the toolbox tests `== 0`), is an ignore region; only the other faces count for recall.
- A detection is kept when x2 - x1 > 21 or y2 - y1 > 21 (21 = int(sqrt(0.5 * 30 * 30)), the
  toolbox's `filterdet`); this happens once, before calibration.
- Overlap is the toolbox's `util.overlap`: areas (|x2 - x1| + 1)(|y2 - y1| + 1), an intersection
  (min x2 - max x1 + 1)(min y2 - max y1 + 1) counted only when the boxes overlap strictly.
- Detections are taken by score, descending and stable (ties keep file order). Each picks the
  ground-truth box of its image with the largest overlap, the LAST one on ties (`>=`); above 0.5
  (strict): an ignore region makes it neither TP nor FP, an unmatched face a TP, a matched face an
  FP. Anything else, and every detection on an image with no annotated box, is an FP.
- Box calibration (`--nit`, default 5): round k evaluates the current boxes, averages over its TPs
  the centre offset and the size ratio to the matched face (widths without +1) and re-maps every
  box. The curve reported is the LAST round's, i.e. of boxes re-mapped nit - 1 times; round 1 is the
  plain (uncalibrated) result, reported beside it.

Choices where the toolbox had to be read closely:

- All-points AP: the toolbox's `VOCap` builds its envelope with Python's `max`, where
  `bench.evals.curves.ap_all_points` uses a NaN-skipping maximum, with identical padding. Precision
  is NaN (0/0) only for a leading run of detections on ignore regions, all at recall 0: that run
  never opens a recall step and nothing after it reads it, so the two agree and `ap_all_points` is
  used. (With no face to recall, both give NaN.)
- 11-point AP: the toolbox's `VOColdap` takes `numpy.max`, which propagates that NaN, so the toolbox
  prints nan whenever the top-scored kept detection falls on an ignore region.
  `curves.ap_11_point` skips NaN; to give the toolbox's number, `ap_11pt` is NaN in that case.
- A calibration round without a TP averages nothing: the toolbox's boxes become NaN, overlap
  nothing, and every later round counts every detection as an FP. Reproduced.
- Image keys: a ground-truth name's base name up to its first '.' (`database.py`); a detection's
  name up to its first '.' (`loadDetectionsPascalFormat` keeps folders, so "x/a.jpg" is not "a").
- Detection lines are split on any run of white space (the toolbox: single spaces), must have
  exactly six fields, and blank lines are skipped; a non-finite number or x2 < x1, y2 < y1 is an
  error. Detections on images the ground truth does not list are FPs as in the toolbox, counted
  and warned about.
- Corners read from files must lie within +-MAX_COORD = 2^31 pixels: areas and calibration then
  never overflow to inf and NaN, where numpy's argmax and the toolbox's `>=` would part ways.
  nit = 1 runs no calibration and is labelled so.
- Two .mat entries with the same image key are an error: the toolbox would count the faces of both
  towards recall but match detections only against the last.
"""

import contextlib
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from bench.errors import UserError
from bench.evals.adapters import FaceDetector, Mode, Size
from bench.evals.curves import PRCurve, ap_11_point, ap_all_points
from bench.evals.detection import (
    DetectionScales,
    ModeScored,
    check_images,
    direction,
    mode_metrics,
    score_modes,
)
from bench.evals.evaluator import EvalResult, EvalSetting, Evaluator, PerExample
from bench.evals.io import json_loads, read_lines, shown
from bench.evals.matfile import load_mat
from bench.schema import InputPath, Int
from bench.util.atomic import write_text

MIN_FACE = 30  # plot_AP.py --minw / --minh defaults
MAX_COORD = 2.0**31  # |corner| bound of files: areas and calibration stay far from overflow
MIN_DET = int(math.sqrt(0.5 * MIN_FACE * MIN_FACE))  # 21: filterdet's minpix
MIN_OVERLAP = 0.5
DEFAULT_NIT = 5  # plot_AP.py --nit default
# What `summarize` reports: AP and 11-point AP with the toolbox's box calibration, and without.
SCORES = ("ap", "ap_11pt", "ap_plain", "ap_11pt_plain")
FORMATS = ("mat", "text", "coco")
TEXT_FORMAT = "imgname x1 y1 x2 y2 [ignore]"
DET_FORMAT = "imgname score x1 y1 x2 y2"
_CORNERS = ("x1", "y1", "x2", "y2")


class PascalEvalConfig(DetectionScales):
    """Scoring on Pascal Faces with the face-eval toolbox's protocol (images `<images>/<key>.jpg`,
    the key being an annotation's file name up to its first '.')."""

    annotations: InputPath = Field(description="the toolbox .mat, the text format, or COCO JSON")
    images: InputPath = Field(description="folder of the images (VOC JPEGImages)")
    format: Literal["auto", "mat", "text", "coco"] = "auto"
    nit: Int = Field(5, ge=1, description="box-calibration rounds (toolbox default 5; 1: none)")
    short: Int = Field(400, gt=0, description="the paper's Pascal Faces setting: 400 / 800")
    long: Int = Field(800, gt=0)


def gt_key(name: str) -> str:
    """Image key of a ground-truth file name: base name up to the first '.'."""
    return name.split("/")[-1].split(".")[0]


def det_key(name: str) -> str:
    """Image key of a detection line's name: everything up to the first '.'."""
    return name.split(".")[0]


class FaceGT:
    """Faces per image key as rows [x1, y1, x2, y2, ignore flag] (4 columns: flag 0). An image
    listed with no face keeps an empty array: its detections are FPs but raise no warning.
    `image_ids` (default 1, 2, ... in order) name the images in COCO files."""

    def __init__(self, boxes: Mapping[str, ArrayLike], image_ids: Mapping[str, int] | None = None,
                 category_id: int = 1) -> None:
        self.boxes = {k: _gt_rows(v) for k, v in boxes.items()}
        self.image_ids = (dict(image_ids) if image_ids is not None
                          else {k: i for i, k in enumerate(self.boxes, 1)})
        if missing := self.boxes.keys() - self.image_ids.keys():
            raise ValueError(f"images without an id: {sorted(missing)[:5]}")
        self.category_id = category_id

    def ignored(self, key: str) -> np.ndarray:
        return _ignored(self.boxes[key])

    @property
    def n_faces(self) -> int:
        """Faces that count towards recall."""
        return int(sum((~_ignored(r)).sum() for r in self.boxes.values()))

    @property
    def n_ignored(self) -> int:
        return int(sum(_ignored(r).sum() for r in self.boxes.values()))


class Detections:
    """Detections in file order: image keys, scores and corner boxes [x1, y1, x2, y2]."""

    def __init__(self, images: Sequence[str], scores: ArrayLike, boxes: ArrayLike) -> None:
        self.images = np.array(list(images), dtype=object)
        self.scores = np.asarray(scores, dtype=float).reshape(-1)
        self.boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        if not len(self.images) == len(self.scores) == len(self.boxes):
            raise ValueError(f"{len(self.images)} images, {len(self.scores)} scores and "
                             f"{len(self.boxes)} boxes: expected one of each per detection")

    def __len__(self) -> int:
        return len(self.scores)


def _gt_rows(values: ArrayLike) -> np.ndarray:
    rows = np.asarray(values, dtype=float)
    if rows.size == 0:
        return np.zeros((0, 5))
    rows = np.atleast_2d(rows)
    if rows.shape[1] == 4:
        rows = np.hstack([rows, np.zeros((len(rows), 1))])
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"ground-truth rows of shape {rows.shape}: expected [x1 y1 x2 y2 ignore]")
    return rows


def _ignored(rows: np.ndarray) -> np.ndarray:
    return ((rows[:, 4] != 0) | (np.abs(rows[:, 2] - rows[:, 0]) < MIN_FACE)
            | (np.abs(rows[:, 3] - rows[:, 1]) < MIN_FACE))


def _kept(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] > MIN_DET) | (boxes[:, 3] - boxes[:, 1] > MIN_DET)


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The toolbox's `util.overlap` for every pair of rows of `a` (k, 4) and `b` (m, 4), corner
    boxes [x1, y1, x2, y2]: +1 areas, and an intersection only where the boxes overlap strictly
    (boxes that share only an edge have none, though +1 pixel counting would give them one)."""
    a, b = np.asarray(a, dtype=float)[:, None, :], np.asarray(b, dtype=float)[None, :, :]
    area_a = (np.abs(a[..., 2] - a[..., 0]) + 1) * (np.abs(a[..., 3] - a[..., 1]) + 1)
    area_b = (np.abs(b[..., 2] - b[..., 0]) + 1) * (np.abs(b[..., 3] - b[..., 1]) + 1)
    strict = ((a[..., 3] > b[..., 1]) & (b[..., 3] > a[..., 1])
              & (a[..., 2] > b[..., 0]) & (b[..., 2] > a[..., 0]))
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.where(strict, iw * ih, 0.0)
    return inter / (area_a + area_b - inter)


def toolbox_ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """The toolbox's `VOColdap`: as `ap_11_point`, but NaN when a NaN precision (a leading run of
    detections on ignore regions) is among the points it takes a maximum over."""
    if np.isnan(precision[recall >= 0]).any():
        return math.nan
    return ap_11_point(recall, precision)


@dataclass(frozen=True)
class Round:
    """One evaluation of the boxes of a calibration round, in score order: per detection TP, FP
    (neither: on an ignore region) and the face a TP matched; then the (tx, ty, sx, sy) averaged
    over the TPs, NaN without any."""

    boxes: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    matched: np.ndarray
    transform: tuple[float, float, float, float]


class PascalFacesEval:
    """The face-eval toolbox's evaluation in the style of COCOeval: `evaluate()` runs the `nit`
    calibration rounds (round 1 is the plain evaluation), `accumulate()` makes the PR curves,
    `summarize()` returns AP with calibration (the toolbox's default) and without."""

    def __init__(self, gt: FaceGT, dets: Detections, nit: int = DEFAULT_NIT) -> None:
        if nit < 1:
            raise ValueError(f"nit = {nit}: expected at least one evaluation round")
        self.gt, self.dets, self.nit = gt, dets, nit
        kept = np.flatnonzero(_kept(dets.boxes))
        self.order = kept[np.argsort(-dets.scores[kept], kind="stable")]
        self.rounds: list[Round] = []
        self.curves: dict[str, PRCurve] = {}
        self.counts = {"images": len(gt.boxes), "faces": gt.n_faces,
                       "ignore_regions": gt.n_ignored, "detections": len(dets),
                       "dropped_small": len(dets) - len(kept), "on_unknown_images": 0}

    def evaluate(self) -> None:
        keys = self.dets.images[self.order]
        unknown = [k for k in keys if k not in self.gt.boxes]
        self.counts["on_unknown_images"] = len(unknown)
        if unknown:
            warnings.warn(f"{len(unknown)} detections on {len(set(unknown))} images the ground "
                          f"truth does not list (e.g. {shown(unknown[0])}) count as false "
                          "positives", stacklevel=2)
        groups = self._groups(keys)
        boxes = self.dets.boxes[self.order]
        self.rounds = []
        for _ in range(self.nit):
            tp, fp, matched = _match(boxes, groups)
            transform = _transform(boxes[tp], matched[tp])
            self.rounds.append(Round(boxes, tp, fp, matched, transform))
            boxes = _remap(boxes, *transform)

    def _groups(self, keys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(face rows, ignore mask, positions in score order) of each image with boxes."""
        if not len(keys):
            return []
        names, inverse = np.unique(keys.astype(str), return_inverse=True)
        by_image = np.split(np.argsort(inverse, kind="stable"),
                            np.cumsum(np.bincount(inverse))[:-1])
        return [(self.gt.boxes[k], self.gt.ignored(k), pos)
                for k, pos in zip(names, by_image, strict=True) if len(self.gt.boxes.get(k, ()))]

    def accumulate(self) -> None:
        if not self.rounds:
            self.evaluate()
        last = f"calibrated (nit={self.nit})" if self.nit > 1 else "plain (nit=1)"
        self.curves = {"calibrated": self._curve(self.rounds[-1], last),
                       "plain": self._curve(self.rounds[0], "plain (nit=1)")}

    def _curve(self, rnd: Round, name: str) -> PRCurve:
        tp, fp = np.cumsum(rnd.tp, dtype=float), np.cumsum(rnd.fp, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / self.gt.n_faces
            precision = tp / (tp + fp)
        transforms = [r.transform for r in self.rounds[:-1]] if rnd is self.rounds[-1] else []
        return PRCurve(name, recall, precision, ap_all_points(recall, precision),
                       thresholds=self.dets.scores[self.order],
                       extra={"ap_11pt": toolbox_ap_11_point(recall, precision),
                              "tp": int(rnd.tp.sum()), "fp": int(rnd.fp.sum()),
                              "transforms": [list(t) for t in transforms]})

    def summarize(self, verbose: bool = False) -> dict[str, float]:
        if not self.curves:
            self.accumulate()
        cal, plain = self.curves["calibrated"], self.curves["plain"]
        metrics = dict(zip(SCORES, (cal.ap, cal.extra["ap_11pt"], plain.ap,
                                    plain.extra["ap_11pt"]), strict=True))
        if verbose:
            c = self.counts
            print(f"Pascal Faces, face-eval toolbox protocol: {c['images']} images, {c['faces']} "
                  f"faces (+{c['ignore_regions']} ignore regions); {c['detections']} detections, "
                  f"{c['dropped_small']} dropped (both sides <= {MIN_DET} px)")
            if self.nit > 1:
                print(f"  AP          {metrics['ap']:.6f}   11-point {metrics['ap_11pt']:.6f}   "
                      f"(box calibration, nit={self.nit})")
            print(f"  AP plain    {metrics['ap_plain']:.6f}   11-point "
                  f"{metrics['ap_11pt_plain']:.6f}   (no calibration, nit=1)")
        return metrics


def _match(boxes: np.ndarray,
           groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VOCprRecord: TP and FP flags and, for TPs, the face matched. The face each detection picks
    does not depend on earlier matches, so per image the first detection (in score order) on a
    face is its TP and later ones are FPs."""
    n = len(boxes)
    tp, fp, matched = np.zeros(n, bool), np.ones(n, bool), np.full((n, 4), np.nan)
    for rows, ignore, pos in groups:
        ov = overlap(boxes[pos], rows[:, :4])
        last = ov.shape[1] - 1 - np.argmax(ov[:, ::-1], axis=1)  # LAST best face, as `>=`
        hit = ov[np.arange(len(pos)), last] > MIN_OVERLAP  # NaN boxes hit nothing
        fp[pos[hit & ignore[last]]] = False
        on_face = hit & ~ignore[last]
        _, first = np.unique(last[on_face], return_index=True)
        wins = pos[on_face][first]
        tp[wins], fp[wins] = True, False
        matched[wins] = rows[last[on_face][first], :4]
    return tp, fp, matched


def _transform(det: np.ndarray, face: np.ndarray) -> tuple[float, float, float, float]:
    """Mean centre offset (in detection widths/heights) and size ratio over the TPs, as
    VOCprRecordOptim; NaN without a TP (the toolbox's mean of an empty list)."""
    if not len(det):
        return (math.nan,) * 4
    dw, dh = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
    tx = ((face[:, 2] + face[:, 0]) / 2.0 - (det[:, 2] + det[:, 0]) / 2.0) / dw
    ty = ((face[:, 3] + face[:, 1]) / 2.0 - (det[:, 3] + det[:, 1]) / 2.0) / dh
    sx, sy = (face[:, 2] - face[:, 0]) / dw, (face[:, 3] - face[:, 1]) / dh
    return float(np.mean(tx)), float(np.mean(ty)), float(np.mean(sx)), float(np.mean(sy))


def _remap(boxes: np.ndarray, tx: float, ty: float, sx: float, sy: float) -> np.ndarray:
    """transf_dets: move each centre by (tx w, ty h) and scale its half-sizes by (sx, sy)."""
    w, h = (boxes[:, 2] - boxes[:, 0]) / 2.0, (boxes[:, 3] - boxes[:, 1]) / 2.0
    cx = (boxes[:, 2] + boxes[:, 0]) / 2.0 + tx * w * 2
    cy = (boxes[:, 3] + boxes[:, 1]) / 2.0 + ty * h * 2
    return np.stack([cx - w * sx, cy - h * sy, cx + w * sx, cy + h * sy], axis=1)


def coco_ap50(gt: FaceGT, dets: Detections) -> dict[str, Any]:
    """AP at IoU 0.5 by pycocotools' COCOeval on the detections the toolbox keeps, uncalibrated;
    faces the toolbox ignores are crowd regions and images the ground truth lacks are added empty.
    COCO's conventions differ (101-point interpolation, IoU >= 0.5, no +1, crowd matching), so this
    is a cross-check of the plain AP, never the protocol's number."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keep = _kept(dets.boxes)
    images, scores, boxes = dets.images[keep].astype(str), dets.scores[keep], dets.boxes[keep]
    ids = dict(gt.image_ids)
    for k in sorted(set(images) - ids.keys()):
        ids[k] = max(ids.values(), default=0) + 1
    anns: list[dict[str, Any]] = []
    for k, rows in gt.boxes.items():
        for row, ignore in zip(rows, _ignored(rows), strict=True):
            anns.append({"id": len(anns) + 1, "image_id": ids[k], "category_id": 1,
                         "bbox": _xywh(row), "area": float((row[2] - row[0]) * (row[3] - row[1])),
                         "iscrowd": int(ignore)})
    results = [{"image_id": ids[k], "category_id": 1, "bbox": _xywh(b), "score": float(s)}
               for k, s, b in zip(images, scores, boxes, strict=True)]
    value = 0.0
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = {"images": [{"id": i, "file_name": k} for k, i in ids.items()],
                               "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
            coco_gt.createIndex()
            ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
            most = int(np.unique(images, return_counts=True)[1].max())
            ev.params.maxDets = [1, 10, max(100, most)]  # no detection is cut
            ev.evaluate()
            ev.accumulate()
        precision = ev.eval["precision"][0, :, 0, 0, -1]  # IoU 0.5, every recall, area all
        value = float(precision.mean()) if (precision > -1).all() else math.nan
    return {"metric": "coco_ap50", "value": value, "role": "cross-check",
            "note": "pycocotools COCOeval bbox AP at IoU 0.5 (101-point, crowd = toolbox ignore "
                    "regions, no calibration): a cross-check, not the Pascal Faces protocol's AP"}


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


# ---- loaders ----------------------------------------------------------------------------------

def gt_format(path: Path, fmt: str | None = None) -> str:
    """The ground-truth format named, or the one the suffix implies (.mat, .json, else text)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UserError(f"--format {shown(fmt)}: expected one of {', '.join(FORMATS)}")
        return fmt
    return {".mat": "mat", ".json": "coco"}.get(path.suffix.lower(), "text")


def load_gt(path: Path, fmt: str | None = None) -> FaceGT:
    loaders = {"mat": load_mat_gt, "text": load_text_gt, "coco": load_coco_gt}
    return loaders[gt_format(path, fmt)](path)


def load_mat_gt(path: Path) -> FaceGT:
    """The toolbox's `Annotations_Face_PASCALLayout_large[_fixed].mat`: a struct array
    `Annotations` with `imgname` and `objects` (rows [x1 y1 x2 y2 _ ignore])."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    data = load_mat(path, "not a MATLAB file scipy can read", struct_as_record=True)
    if "Annotations" not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise UserError(f"{path}: no variable 'Annotations' (variables: {found})")
    return gt_from_mat(data["Annotations"], str(path))


def gt_from_mat(annotations: Any, source: str = "Annotations") -> FaceGT:
    """The ground truth of an `Annotations` struct array as scipy.io.loadmat returns it, with
    struct_as_record True (records) or False (mat_struct objects), squeezed or not. Rows with 4
    or 5 values have ignore flag 0, as in the toolbox."""
    entries = annotations.ravel(order="F") if isinstance(annotations, np.ndarray) \
        else [annotations]
    boxes: dict[str, np.ndarray] = {}
    where_of: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        where = f"{source}: Annotations({i})"
        key = gt_key(_mat_string(_mat_field(entry, "imgname", where), f"{where}.imgname"))
        if key in boxes:
            raise UserError(f"{where}.imgname: image {shown(key)} again (first in "
                            f"{where_of[key]}): expected one entry per image")
        where_of[key] = where
        boxes[key] = _mat_rows(_mat_field(entry, "objects", where), f"{where}.objects")
    return FaceGT(boxes)


def _mat_field(entry: Any, name: str, where: str) -> Any:
    if isinstance(entry, np.ndarray) and entry.size == 1:
        entry = entry.ravel()[0]
    names = entry.dtype.names if isinstance(entry, np.void) else getattr(entry, "_fieldnames", ())
    if not names or name not in names:
        raise UserError(f"{where}: no field {name!r} (fields: {shown(', '.join(names or ()))})"
                        ": expected a struct with 'imgname' and 'objects'")
    return entry[name] if isinstance(entry, np.void) else getattr(entry, name)


def _mat_string(value: Any, where: str) -> str:
    while isinstance(value, np.ndarray) and value.size == 1:
        value = value.ravel()[0]
    if isinstance(value, str) and value:
        return str(value)
    raise UserError(f"{where}: {shown(value)}: expected the image's file name as a string")


def _mat_rows(value: Any, where: str) -> np.ndarray:
    try:
        if isinstance(value, np.ndarray) and value.dtype == object:  # a cell array of rows
            raw = [np.asarray(c, dtype=float).ravel() for c in value.ravel(order="F")]
        else:
            array = np.asarray(value, dtype=float)
            raw = list(np.atleast_2d(array)) if array.size else []
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected a numeric matrix of rows [x1 y1 x2 y2 _ ignore]") \
            from None
    rows = []
    for j, r in enumerate(raw, 1):
        if len(r) < 4 or not (np.abs(r[:4]) <= MAX_COORD).all() or (
                len(r) >= 6 and not np.isfinite(r[5])):
            raise UserError(f"{where} row {j}: {shown(r.tolist())}: expected [x1 y1 x2 y2 _ "
                            f"ignore] (at least 4 values), corners within +-{MAX_COORD:.0f}")
        rows.append([*r[:4], r[5] if len(r) >= 6 else 0.0])
    return np.array(rows, dtype=float).reshape(-1, 5)


def load_text_gt(path: Path) -> FaceGT:
    """Plain text, one face per line: `imgname x1 y1 x2 y2 [ignore]` (corners in pixels; ignore 0
    or 1, default 0). A line with only `imgname` lists an image without faces; blank lines and
    lines starting with '#' are skipped. Lines of one image key add up."""
    boxes: dict[str, list[list[float]]] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (1, 5, 6):
            raise UserError(f"{path}:{lineno}: {len(fields)} fields: expected '{TEXT_FORMAT}' "
                            "(or just imgname for an image without faces)")
        rows = boxes.setdefault(gt_key(fields[0]), [])
        if len(fields) == 1:
            continue
        x1, y1, x2, y2 = (_number(t, path, lineno, n)
                          for t, n in zip(fields[1:5], _CORNERS, strict=True))
        _check_corners(x1, y1, x2, y2, path, lineno)
        ignore = _number(fields[5], path, lineno, "ignore") if len(fields) == 6 else 0.0
        if ignore not in (0.0, 1.0):
            raise UserError(f"{path}:{lineno}: ignore {shown(fields[5])}: expected 0 or 1")
        rows.append([x1, y1, x2, y2, ignore])
    return FaceGT(boxes)


def load_coco_gt(path: Path) -> FaceGT:
    """COCO instances JSON through pycocotools' COCO: every category is a face, `iscrowd` (or an
    `ignore` field) makes an ignore region, bbox [x, y, w, h] is corners [x, y, x + w, y + h]."""
    from pycocotools.coco import COCO

    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a COCO object with lists 'images' and 'annotations'")
    _check_coco_entries(path, data, "images", ("id", "file_name"))
    _check_coco_entries(path, data, "annotations", ("id", "image_id"))
    if "categories" in data:
        _check_coco_entries(path, data, "categories", ("id",))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    boxes: dict[str, list[list[float]]] = {}
    ids: dict[str, int] = {}
    for img_id, img in coco.imgs.items():
        name = img["file_name"]
        key = gt_key(name)
        if key in ids:
            raise UserError(f"{path}: image id {img_id}: {shown(name)} has the key {shown(key)} "
                            f"of image id {ids[key]}: expected one image per key")
        ids[key] = img_id
        boxes[key] = []
    for ann in coco.anns.values():
        where = f"{path}: annotation id {ann['id']}"
        if ann["image_id"] not in coco.imgs:
            raise UserError(f"{where}: image_id {ann['image_id']}: not among the images")
        x, y, w, h = _coco_box(ann.get("bbox"), where)
        ignore = bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0))
        boxes[gt_key(coco.imgs[ann["image_id"]]["file_name"])].append(
            [x, y, x + w, y + h, float(ignore)])
    category = min(coco.cats, default=1)
    return FaceGT(boxes, ids, category)


def _check_coco_entries(path: Path, data: dict, key: str, fields: tuple[str, ...]) -> None:
    """`data[key]` is a list of objects, each with the `fields` ('id' and '..._id': integers,
    'file_name': a non-empty string) and an 'id' no other entry has."""
    entries = data.get(key)
    if not isinstance(entries, list):
        raise UserError(f"{path}: {key}: {shown(entries)}: expected a list of COCO objects")
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: {key}[{i}]: {shown(entry)}: expected an object with "
                            f"{', '.join(fields)}")
        for field in fields:
            value = entry.get(field)
            if field == "file_name":
                ok = isinstance(value, str) and bool(value)
            else:
                ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok:
                raise UserError(f"{path}: {key}[{i}].{field}: {shown(value)}: expected "
                                f"{'a file name' if field == 'file_name' else 'an integer'}")
        if entry["id"] in first:
            raise UserError(f"{path}: {key}[{i}].id: {entry['id']} again (first in "
                            f"{key}[{first[entry['id']]}]): expected ids that differ")
        first[entry["id"]] = i


def load_dets(path: Path, gt: FaceGT | None = None) -> Detections:
    """Toolbox lines, or a COCO results JSON (.json; image ids read through `gt`)."""
    if path.suffix.lower() == ".json":
        if gt is None:
            raise UserError(f"{path}: COCO results name images by id: the ground truth is needed")
        return load_coco_dets(path, gt)
    return load_toolbox_dets(path)


def load_toolbox_dets(path: Path) -> Detections:
    """The toolbox's detection file: one `imgname score x1 y1 x2 y2` per line."""
    images, scores, boxes = [], [], []
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise UserError(f"{path}:{lineno}: {len(fields)} fields: expected '{DET_FORMAT}'")
        score, x1, y1, x2, y2 = (_number(t, path, lineno, n)
                                 for t, n in zip(fields[1:], ("score", *_CORNERS), strict=True))
        _check_corners(x1, y1, x2, y2, path, lineno)
        images.append(det_key(fields[0]))
        scores.append(score)
        boxes.append([x1, y1, x2, y2])
    return Detections(images, scores, boxes)


def load_coco_dets(path: Path, gt: FaceGT) -> Detections:
    """COCO results JSON (a list of {image_id, bbox [x, y, w, h], score}); image ids are those
    of `gt`, as pycocotools' loadRes requires."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a COCO results list of {{image_id, bbox, score}}")
    key_of = {i: k for k, i in gt.image_ids.items()}
    images, scores, boxes = [], [], []
    for n, d in enumerate(data):
        where = f"{path}: result {n}"
        image_id = d.get("image_id") if isinstance(d, dict) else None
        if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id not in key_of:
            raise UserError(f"{where}: image_id {shown(image_id if isinstance(d, dict) else d)}: "
                            "expected an image id of the ground truth")
        x, y, w, h = _coco_box(d.get("bbox"), where)
        score = d.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not math.isfinite(score):
            raise UserError(f"{where}: score {shown(score)}: expected a finite number")
        images.append(key_of[image_id])
        scores.append(float(score))
        boxes.append([x, y, x + w, y + h])
    return Detections(images, scores, boxes)


def _read_json(path: Path) -> Any:
    text = "\n".join(read_lines(path))
    try:
        return json_loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _number(token: str, path: Path, lineno: int, field: str) -> float:
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{path}:{lineno}: {field} {shown(token)}: expected a finite number")
    if field in _CORNERS and abs(value) > MAX_COORD:
        raise UserError(f"{path}:{lineno}: {field} {shown(token)}: expected pixels from "
                        f"{-MAX_COORD:.0f} to {MAX_COORD:.0f}")
    return value


def _check_corners(x1: float, y1: float, x2: float, y2: float, path: Path, lineno: int) -> None:
    if x2 < x1 or y2 < y1:
        raise UserError(f"{path}:{lineno}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}): expected "
                        "corners with x2 >= x1 and y2 >= y1 (not a width and height)")


def _coco_box(bbox: Any, where: str) -> tuple[float, float, float, float]:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_COORD
            for v in bbox) or bbox[2] < 0 or bbox[3] < 0:
        raise UserError(f"{where}: bbox {shown(bbox)}: expected [x, y, width, height], each "
                        f"within +-{MAX_COORD:.0f}, width and height >= 0")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, w, h


# ---- writers ----------------------------------------------------------------------------------

def write_toolbox_dets(path: Path, dets: Detections) -> None:
    """One `imgname score x1 y1 x2 y2` line per detection (imgname: the image key), numbers in
    Python's shortest exact form, so the file reads back to the same values."""
    lines = []
    for k, s, b in zip(dets.images, dets.scores, dets.boxes, strict=True):
        if not k or len(str(k).split()) != 1 or "." in k:
            raise ValueError(f"image key {k!r}: expected a name without spaces or '.'")
        lines.append(" ".join([str(k), *(repr(float(v)) for v in (s, *b))]) + "\n")
    write_text(path, "".join(lines))


def write_coco_results(path: Path, dets: Detections, gt: FaceGT) -> None:
    """COCO results JSON ({image_id, category_id, bbox [x, y, w, h], score}) with the image ids
    and category of `gt`, ready for pycocotools' loadRes."""
    if unknown := sorted({str(k) for k in dets.images} - gt.image_ids.keys()):
        raise ValueError(f"{len(unknown)} images have no id in the ground truth "
                         f"(e.g. {unknown[0]!r}): COCO results cannot name them")
    results = [{"image_id": gt.image_ids[k], "category_id": gt.category_id, "bbox": _xywh(b),
                "score": float(s)} for k, s, b in zip(dets.images, dets.scores, dets.boxes,
                                                       strict=True)]
    write_text(path, json.dumps(results) + "\n")


# ---- the evaluator ----------------------------------------------------------------------------

class PascalEvaluator:
    """A face detector on every annotated Pascal Faces image: per mode, the toolbox's detection
    file (`pascal_detections_<mode>.txt` in the work folder), AP with box calibration and
    without (all-points and 11-point), both PR curves and the ms each image took."""

    name = "pascal"
    config_model = PascalEvalConfig
    needs = FaceDetector

    def higher_is_better(self, metric: str) -> bool | None:
        return direction(metric, lambda name: name.startswith("ap"))

    def metrics(self, config: PascalEvalConfig) -> list[str]:
        return mode_metrics(config, SCORES)

    def is_proxy(self, config: PascalEvalConfig) -> bool:
        return False  # no `proxy:` key: a suite on proxy images says so in its report notes

    def per_example(self, metric: str) -> PerExample | None:
        """None: the calibration is fitted over every image's detections together, so no image
        has a share of the AP of its own: these metrics have the seed test."""
        return None

    def inputs(self, config: PascalEvalConfig, data_root: str | None) -> dict[str, str]:
        return {"annotations": config.annotations, "images": config.images}

    def check(self, config: PascalEvalConfig, data_root: str | None) -> None:
        check_images(_annotated(config)[1], config.annotations)

    def evaluate(self, config: PascalEvalConfig, model: FaceDetector,
                 setting: EvalSetting) -> EvalResult:
        gt, paths = _annotated(config)
        keys = list(gt.boxes)

        def score(mode: Mode, size: Size) -> ModeScored:
            dets, took = model.detect(paths, mode, size, config.annotations)
            found = Detections(
                [k for k, d in zip(keys, dets, strict=True) for _ in d],
                np.concatenate([d[:, 4] for d in dets]) if dets else np.zeros(0),
                np.concatenate([d[:, :4] for d in dets]) if dets else np.zeros((0, 4)))
            write_toolbox_dets(setting.workdir / f"pascal_detections_{mode}.txt", found)
            evaluator = PascalFacesEval(gt, found, nit=config.nit)
            return ModeScored(evaluator.summarize(), evaluator.curves, took)

        return score_modes(config, score)


def _annotated(config: PascalEvalConfig) -> tuple[FaceGT, list[Path]]:
    """The ground truth and `<images>/<key>.jpg` of every annotated image, in its order."""
    gt = load_gt(Path(config.annotations), None if config.format == "auto" else config.format)
    return gt, [Path(config.images) / f"{k}.jpg" for k in gt.boxes]


EVALUATOR: Evaluator[PascalEvalConfig, FaceDetector] = PascalEvaluator()
