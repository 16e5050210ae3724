"""FDDB's official ROC (Jain and Learned-Miller, UMass tech report UM-CS-2010-009), reproduced.

The official evaluator (evaluate.cpp, Matching.cpp, Results.cpp, ...) is written against OpenCV's
removed C API and no longer builds; scripts that replace it usually score something else. This
module computes the official discrete and continuous ROC from the same files:

- every face (an ellipse) and every detection (a rectangle or an ellipse) is a filled pixel mask
  of the image's size, drawn as the official tool draws it, clipped to the image; a pair scores
  its pixel IoU (pure geometry gives other numbers);
- per image, faces and detections are matched one-to-one maximising the total IoU over the pairs
  that overlap (the official Hungarian solver; scipy's linear_sum_assignment reaches the same
  optimum, though with exact ties it may pick other pairs);
- for every distinct detection score s, each image's detections are cut to score >= s and the
  matching is RECOMPUTED on what is kept, as the official loop re-runs the Hungarian algorithm per
  threshold: a face matched at a high threshold can go to another detection lower down, so TP_disc
  need not grow as s falls. TP_disc counts matched pairs with IoU > 0.5 (strict), TP_cont sums the
  IoUs of all matched pairs, FP = kept detections - TP_disc, and N counts every face of the
  evaluated images, those of images without detections included. DiscROC is TP_disc / N against
  FP, ContROC TP_cont / N against FP.

Fast without changing a number: an image's IoU matrix is computed once (rectangles through
integral images of the face masks); walking its distinct scores downwards the assignment is solved
again only when the newly kept detections overlap a face, since otherwise the matrix handed to the
solver, from which rows and columns without overlap are dropped as in the official code, is the
same; images are merged by score with cumulative sums of per-image increments.

Choices where the protocol text is loose, taken from the official code:
- coordinates go through cvPointFrom32f(cvPoint2D32f(x, y)): float32, then cvRound, which rounds
  half to even; ellipse axes are truncated (static_cast<int>); the angle (radians) becomes degrees;
  a rectangle's corners are (x, y) and (x + w, y + h), both inclusive, so its mask is that box
  clipped to the image: exactly what cv2.rectangle(thickness=-1) fills (the tests check this
  against OpenCV, ellipses are drawn by cv2.ellipse itself);
- an ellipse's axes, angle and centre must lie within +-MAX_COORD = 2^17 (pixels, radians for
  the angle; twice JPEG's largest side): evaluate.cpp turns them into C ints, undefined past
  2^31, and OpenCV's fill takes time in proportion to the axis, so farther values, which no
  annotation or detector produces, are refused. A rectangle may have any finite corners: the
  official cvRectangle clips it to the image, and so does this module;
- image sizes come from the images (decoded by OpenCV ignoring EXIF orientation, as the old
  cvLoadImage did) or from a file of `name width height` lines: whole numbers from 1 to 65,535
  (JPEG's largest side) and at most 2^26 pixels in all, which bounds the memory of an image's
  masks (about 10 bytes a pixel);
- detection blocks must follow the annotation list; the name check is the official one (the
  block's name line contains the annotation's name, so `<name>.jpg` passes). The official tool
  silently ignores blocks past the list's end; here they are an error, as they mean the two files
  disagree;
- one ROC point per distinct detection score, ascending, as in the official DiscROC.txt; the
  official files add a point (0, 0) at DBL_MAX when some image has no detection, left out here;
  with N = 0 every TPR is 0 (the official writes "0 0");
- a pair whose masks are both empty (both outside the image) scores 0, where the official code
  divides 0 by 0;
- detections are scored in the shape given (no rectangle-to-ellipse conversion): rectangles keep
  the discrete score close to ellipses' but lower the continuous one markedly;
- the reported reading is the best TPR among the points with at most `fp_limit` false positives
  (ROCCurve.tpr_at), 1000 by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, get_args

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field, field_validator

from bench.errors import UserError
from bench.evals.adapters import FaceDetector, Mode, Size
from bench.evals.curves import ROCCurve
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
from bench.schema import Float, InputPath, Int
from bench.util.atomic import write_text

FOLDS = tuple(range(1, 11))
# The columns of one line of each kind of region, in file order.
KINDS: dict[str, tuple[str, ...]] = {
    "rect": ("left", "top", "width", "height", "score"),
    "ellipse": ("major_axis_radius", "minor_axis_radius", "angle", "center_x", "center_y",
                "score"),
}
_ANNOTATION = (*KINDS["ellipse"][:5], "1")
_NON_NEGATIVE = {"width", "height", "major_axis_radius", "minor_axis_radius"}
# An ellipse's columns (not its score) lie within +-MAX_COORD; see the module docstring.
MAX_COORD = 2**17
_BOUNDED = set(KINDS["ellipse"][:5])
MAX_SIDE = 65_535  # JPEG's largest width or height
MAX_PIXELS = 2**26  # width x height: bounds the memory of an image's masks


class FDDBEvalConfig(DetectionScales):
    """Scoring on FDDB (FDDB-folds/ and originalPics/ under `root`) with the official ROC."""

    root: InputPath
    folds: list[Annotated[Int, Field(ge=1, le=10)]] = Field(
        list(range(1, 11)), min_length=1, description="FDDB's ten folds are numbered 1 to 10")
    short: Int = Field(400, gt=0, description="the paper's FDDB setting: 400 / 800")
    long: Int = Field(800, gt=0)
    fp: Float = Field(1000, gt=0, description="read the true-positive rate at this many FPs")

    @field_validator("folds")
    @classmethod
    def _distinct_folds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("folds must be distinct")
        return v


def _parse_row(text: str, fields: Sequence[str], where: str) -> list[float]:
    parts = text.split()
    if len(parts) != len(fields):
        raise UserError(f"{where}: expected {len(fields)} numbers ({' '.join(fields)}), "
                        f"got {len(parts)}: {shown(text.strip())}")
    values = []
    for field, part in zip(fields, parts, strict=True):
        try:
            value = float(part)
        except ValueError:
            raise UserError(f"{where}: {field} is {shown(part)}; expected a number") from None
        if not math.isfinite(value):
            raise UserError(f"{where}: {field} is {part}; expected a finite number")
        if field in _NON_NEGATIVE and value < 0:
            raise UserError(f"{where}: {field} is {part}; expected a number >= 0")
        if field in _BOUNDED and abs(value) > MAX_COORD:
            raise UserError(f"{where}: {field} is {shown(part)}; expected a number from "
                            f"{-MAX_COORD} to {MAX_COORD} (pixels, or radians for an angle)")
        values.append(value)
    return values


def _is_row(text: str, n_fields: int) -> bool:
    """Whether a line is `n_fields` numbers: a region line where an image name belongs."""
    parts = text.split()
    if len(parts) != n_fields:
        return False
    try:
        for part in parts:
            float(part)
    except ValueError:
        return False
    return True


def _read_blocks(path: Path, fields: Sequence[str], what: str,
                 names: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Blocks of `name`, `count`, then `count` lines of `fields`; with `names`, the i-th block
    must be image names[i] (the official check: its name line contains names[i])."""
    lines = read_lines(path)
    blocks: dict[str, np.ndarray] = {}
    count_line = 0
    i = 0
    while True:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines):
            break
        name, where = lines[i].strip(), f"{path}, line {i + 1}"
        if count_line and _is_row(name, len(fields)):
            raise UserError(f"{where}: expected an image name, got a line of {len(fields)} "
                            f"numbers: the count on line {count_line} announces fewer {what} "
                            "than the lines that follow it")
        key = name
        if names is not None:
            if len(blocks) == len(names):
                raise UserError(f"{where}: image {shown(name)} comes after the {len(names)} images "
                                "of the image list; the file must hold exactly those, in order")
            key = names[len(blocks)]
            if key not in name:
                raise UserError(f"{where}: image {shown(name)} where the image list has "
                                f"{shown(key)} (image {len(blocks) + 1}); {what} must follow "
                                "its order")
        if key in blocks:
            raise UserError(f"{where}: image {shown(name)} is listed twice")
        i += 1
        count_line = i + 1
        if i == len(lines):
            raise UserError(f"{path}, line {count_line}: the file ends after image {shown(name)}; "
                            f"expected its number of {what}")
        try:
            count = int(lines[i])
        except ValueError:
            count = -1
        if count < 0:
            raise UserError(f"{path}, line {count_line}: expected the number of {what} of image "
                            f"{shown(name)} (an integer >= 0), got {shown(lines[i].strip())}")
        i += 1
        rows = []
        for k in range(count):
            if i == len(lines) or len(lines[i].split()) == 1:
                raise UserError(f"{path}, line {i + 1}: the count on line {count_line} announces "
                                f"{count} {what} for image {shown(name)}, but {k} follow")
            rows.append(_parse_row(lines[i], fields, f"{path}, line {i + 1}"))
            i += 1
        blocks[key] = np.array(rows, dtype=float).reshape(count, len(fields))
    if names is not None and len(blocks) < len(names):
        raise UserError(f"{path}: holds {len(blocks)} images where the image list has "
                        f"{len(names)}; the next expected is {shown(names[len(blocks)])}")
    return blocks


def read_fold_list(path: Path | str) -> list[str]:
    """A fold's image names (`FDDB-fold-NN.txt`), one per line, without extension."""
    path = Path(path)
    names: list[str] = []
    for no, line in enumerate(read_lines(path), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise UserError(f"{path}, line {no}: expected one image name, got {shown(name)}")
        if name in names:
            raise UserError(f"{path}, line {no}: image {shown(name)} is listed twice")
        names.append(name)
    if not names:
        raise UserError(f"{path}: no image names")
    return names


def read_ellipse_annotations(path: Path | str,
                             names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """`FDDB-fold-NN-ellipseList.txt`: per image its name, its face count, then one line
    `major_axis_radius minor_axis_radius angle center_x center_y 1` per face. Returns, in file
    order, name -> (faces, 5) array of those first five columns (angle in radians)."""
    blocks = _read_blocks(Path(path), _ANNOTATION, "faces", names)
    return {name: rows[:, :5] for name, rows in blocks.items()}


def read_fddb_folds(folds_dir: Path | str, folds: Iterable[int] = FOLDS) -> dict[str, np.ndarray]:
    """The faces of the chosen folds, fold by fold, from a `FDDB-folds` folder; each fold's
    ellipse list must follow its image list."""
    folds_dir = Path(folds_dir)
    annotations: dict[str, np.ndarray] = {}
    for fold in folds:
        if fold not in FOLDS:
            raise UserError(f"fold {fold}: FDDB has folds 1 to 10")
        names = read_fold_list(folds_dir / f"FDDB-fold-{fold:02d}.txt")
        path = folds_dir / f"FDDB-fold-{fold:02d}-ellipseList.txt"
        faces = read_ellipse_annotations(path, names)
        twice = next((n for n in faces if n in annotations), None)
        if twice is not None:
            raise UserError(f"{path}: image {shown(twice)} is also in an earlier fold "
                            "(is a fold chosen twice?)")
        annotations.update(faces)
    return annotations


def read_fddb_detections(path: Path | str, kind: str = "rect",
                         names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A detection file in the official layout: per image its name, its detection count, then
    one line per detection, `left top width height score` (kind "rect") or `major_axis_radius
    minor_axis_radius angle center_x center_y score` (kind "ellipse"). With `names` (the
    annotation list) the blocks must follow that list and are keyed by its names; without, by
    the name lines as written. Returns name -> (detections, 5 or 6) array."""
    return _read_blocks(Path(path), _fields(kind), "detections", names)


def write_fddb_detections(path: Path | str, detections: Mapping[str, ArrayLike],
                          kind: str = "rect") -> None:
    """Write detections in the official layout, readable by the official tool too; numbers are
    written in full (shortest round-trip form), so reading them back gives the same floats."""
    fields = _fields(kind)
    out: list[str] = []
    for name, rows in detections.items():
        arr = _rows(rows, fields, f"detections of image {shown(name)}")
        out += [name, str(len(arr))]
        out += [" ".join(repr(float(v)) for v in row) for row in arr]
    write_text(Path(path), "".join(f"{line}\n" for line in out))


def read_image_sizes(path: Path | str) -> dict[str, tuple[int, int]]:
    """A file of `name width height` lines: image sizes without the images."""
    path = Path(path)
    sizes: dict[str, tuple[int, int]] = {}
    for no, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}, line {no}"
        if len(parts) != 3:
            raise UserError(f"{where}: expected 'name width height' with positive integer "
                            f"width and height, got {shown(line.strip())}")
        if parts[0] in sizes:
            raise UserError(f"{where}: image {shown(parts[0])} is listed twice")
        sizes[parts[0]] = _image_size(parts[1], parts[2], f"{where}: image {shown(parts[0])}")
    return sizes


def image_sizes_from_dir(images_dir: Path | str,
                         names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(width, height) of `<images_dir>/<name>.jpg` for each name (FDDB's originalPics layout)."""
    import cv2

    sizes = {}
    for name in names:
        path = Path(images_dir) / f"{name}.jpg"
        image = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
                 if path.is_file() else None)
        if image is None:
            raise UserError(f"{path}: image missing or unreadable (sizes are read from "
                            "<images>/<name>.jpg; a sizes file can replace the images)")
        sizes[name] = _image_size(image.shape[1], image.shape[0], str(path))
    return sizes


def _fields(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise UserError(f"detection kind {shown(kind)}: expected one of {', '.join(KINDS)}")
    return KINDS[kind]


def _rows(rows: ArrayLike, fields: Sequence[str], what: str) -> np.ndarray:
    """`rows` as a (n, len(fields)) float array of finite values, sizes >= 0."""
    arr = np.asarray(rows, dtype=float)
    if arr.size == 0:
        return np.zeros((0, len(fields)))
    if arr.ndim != 2 or arr.shape[1] != len(fields):
        raise UserError(f"{what}: expected rows of {len(fields)} numbers ({' '.join(fields)}), "
                        f"got an array of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UserError(f"{what}: holds a value that is not a finite number")
    for col, field in enumerate(fields):
        if field in _NON_NEGATIVE and (arr[:, col] < 0).any():
            raise UserError(f"{what}: {field} < 0")
        if field in _BOUNDED and (np.abs(arr[:, col]) > MAX_COORD).any():
            raise UserError(f"{what}: {field} beyond +-{MAX_COORD}")
    return arr


def _image_size(width: object, height: object, what: str) -> tuple[int, int]:
    """(width, height) as ints, each 1..MAX_SIDE and together at most MAX_PIXELS; given as ints
    or as the digits of a sizes file."""
    w, h = _whole(width), _whole(height)
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE) or w * h > MAX_PIXELS:
        raise UserError(f"{what}: size {shown(width)} x {shown(height)}; expected whole numbers "
                        f"of pixels from 1 to {MAX_SIDE} (JPEG's limit), at most {MAX_PIXELS:,} "
                        "pixels in all")
    return w, h


def _whole(value: object) -> int:
    """An int, or ASCII digits (at most 9): the number; anything else: 0."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return 0


def _cv_round(values: np.ndarray) -> np.ndarray:
    """cvPointFrom32f(cvPoint2D32f(x, y)): through float32, then round half to even."""
    return np.rint(np.asarray(values, dtype=np.float32)).astype(np.float64)


def _ellipse_masks(ellipses: np.ndarray, width: int,
                   height: int) -> list[tuple[int, int, np.ndarray]]:
    """Each ellipse's filled mask as (x0, y0, crop): OpenCV draws no pixel farther than the
    longer axis from the center, so a crop one pixel wider than that holds them all."""
    import cv2

    cx, cy = _cv_round(ellipses[:, 3]), _cv_round(ellipses[:, 4])
    axes = np.trunc(ellipses[:, :2])
    reach = axes.max(axis=1) + 1
    x0, x1 = np.clip(cx - reach, 0, width), np.clip(cx + reach + 1, 0, width)
    y0, y1 = np.clip(cy - reach, 0, height), np.clip(cy + reach + 1, 0, height)
    angles = np.degrees(ellipses[:, 2])
    canvas = np.zeros((height, width), np.uint8)
    masks = []
    for i in range(len(ellipses)):
        if x0[i] >= x1[i] or y0[i] >= y1[i]:
            masks.append((0, 0, np.zeros((0, 0), bool)))
            continue
        cv2.ellipse(canvas, (int(cx[i]), int(cy[i])), (int(axes[i, 0]), int(axes[i, 1])),
                    float(angles[i]), 0, 360, 1, -1)
        window = canvas[int(y0[i]):int(y1[i]), int(x0[i]):int(x1[i])]
        masks.append((int(x0[i]), int(y0[i]), window.astype(bool)))
        window[:] = 0
    return masks


def _rect_boxes(rects: np.ndarray, width: int, height: int) -> np.ndarray:
    """Half-open pixel boxes (x0, y0, x1, y1) of the rectangles' masks, clipped to the image
    (empty where x1 == x0 or y1 == y0). Clipping before rounding keeps far-off corners finite."""
    left, top = rects[:, 0], rects[:, 1]
    with np.errstate(over="ignore"):  # a sum past the largest float is clipped all the same
        right, bottom = left + rects[:, 2], top + rects[:, 3]
    x0 = _cv_round(np.clip(left, -1, width))
    y0 = _cv_round(np.clip(top, -1, height))
    x1 = _cv_round(np.clip(right, -1, width)) + 1
    y1 = _cv_round(np.clip(bottom, -1, height)) + 1
    x0, y0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
    x1, y1 = np.clip(x1, x0, width), np.clip(y1, y0, height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def pixel_iou(faces: ArrayLike, detections: ArrayLike, kind: str,
              size: tuple[int, int]) -> np.ndarray:
    """(faces, detections) matrix of mask IoUs in an image of `size` = (width, height)."""
    fields = _fields(kind)
    faces = _rows(faces, KINDS["ellipse"][:5], "faces")
    dets = _rows(detections, fields, "detections")
    width, height = size
    inter = np.zeros((len(faces), len(dets)), np.int64)
    if len(faces) == 0 or len(dets) == 0:
        return inter.astype(float)
    face_masks = _ellipse_masks(faces, width, height)
    if kind == "rect":
        boxes = _rect_boxes(dets, width, height)
        det_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for a, (fx, fy, mask) in enumerate(face_masks):
            h, w = mask.shape
            integral = np.zeros((h + 1, w + 1), np.int64)
            integral[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
            qx0, qx1 = np.clip(boxes[:, 0] - fx, 0, w), np.clip(boxes[:, 2] - fx, 0, w)
            qy0, qy1 = np.clip(boxes[:, 1] - fy, 0, h), np.clip(boxes[:, 3] - fy, 0, h)
            inter[a] = (integral[qy1, qx1] - integral[qy0, qx1] - integral[qy1, qx0]
                        + integral[qy0, qx0])
    else:
        det_masks = _ellipse_masks(dets, width, height)
        det_area = np.array([np.count_nonzero(m) for _, _, m in det_masks])
        for a, (fx, fy, fm) in enumerate(face_masks):
            for d, (dx, dy, dm) in enumerate(det_masks):
                x0, x1 = max(fx, dx), min(fx + fm.shape[1], dx + dm.shape[1])
                y0, y1 = max(fy, dy), min(fy + fm.shape[0], dy + dm.shape[0])
                if x0 < x1 and y0 < y1:
                    inter[a, d] = np.count_nonzero(fm[y0 - fy:y1 - fy, x0 - fx:x1 - fx]
                                                   & dm[y0 - dy:y1 - dy, x0 - dx:x1 - dx])
    face_area = np.array([np.count_nonzero(m) for _, _, m in face_masks])
    union = face_area[:, None] + det_area[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


@dataclass(frozen=True)
class ImageResult:
    """One image at each of its own distinct detection scores, ascending: detections kept
    (score >= threshold), matched pairs with IoU > 0.5, and the sum of matched IoUs."""

    name: str
    n_faces: int
    iou: np.ndarray
    thresholds: np.ndarray
    kept: np.ndarray
    tp_disc: np.ndarray
    tp_cont: np.ndarray


def match_per_threshold(iou: np.ndarray, scores: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, kept, tp_disc, tp_cont) of one image, the matching solved anew for the
    detections kept at each of its distinct scores (see the module docstring)."""
    # imported here: 0.5 s that a suite's validation (which imports this module) need not pay
    from scipy.optimize import linear_sum_assignment

    thresholds, group = np.unique(scores, return_inverse=True)
    k = len(thresholds)
    kept = np.cumsum(np.bincount(group, minlength=k)[::-1])[::-1]
    overlaps = iou > 0
    hits = overlaps.any(axis=0)
    changes = np.bincount(group, weights=hits, minlength=k) > 0
    tp_disc, tp_cont = np.zeros(k, np.int64), np.zeros(k)
    disc, cont = 0, 0.0
    for j in range(k - 1, -1, -1):
        if changes[j]:
            cols = hits & (group >= j)
            rows = overlaps[:, cols].any(axis=1)
            sub = iou[np.ix_(rows, cols)]
            r, c = linear_sum_assignment(sub, maximize=True)
            matched = sub[r, c]
            matched = matched[matched > 0]
            disc, cont = int(np.count_nonzero(matched > 0.5)), float(matched.sum())
        tp_disc[j], tp_cont[j] = disc, cont
    return thresholds, kept, tp_disc, tp_cont


class FDDBEval:
    """The official FDDB ROC for ellipse faces and rectangle or ellipse detections.

    annotations: image name -> (faces, 5) rows `major_axis_radius minor_axis_radius angle
    center_x center_y`; detections: name -> rows in KINDS[kind] order (an image left out has no
    detections); sizes: name -> (width, height); images: the images to evaluate (for instance
    some folds), all annotated images by default.
    """

    def __init__(self, annotations: Mapping[str, ArrayLike], detections: Mapping[str, ArrayLike],
                 sizes: Mapping[str, tuple[int, int]], kind: str = "rect",
                 images: Sequence[str] | None = None) -> None:
        fields = _fields(kind)
        self.kind = kind
        self.images = list(annotations if images is None else images)
        unknown = [n for n in (detections if images is None else self.images)
                   if n not in annotations]
        if unknown:
            raise UserError(f"{len(unknown)} images with detections or chosen for evaluation "
                            f"have no annotations, e.g. {shown(unknown[0])}")
        self.faces = {n: _rows(annotations[n], KINDS["ellipse"][:5],
                               f"faces of image {shown(n)}") for n in self.images}
        self.detections = {n: _rows(detections.get(n, ()), fields,
                                    f"detections of image {shown(n)}") for n in self.images}
        missing = [n for n in self.images if n not in sizes]
        if missing:
            raise UserError(f"no image size for {len(missing)} evaluated images, "
                            f"e.g. {shown(missing[0])}")
        self.sizes = {n: _image_size(*sizes[n], f"image {shown(n)}") for n in self.images}
        self.results: list[ImageResult] | None = None
        self.disc: ROCCurve | None = None
        self.cont: ROCCurve | None = None
        self.levels = np.zeros(0)  # after accumulate(): the distinct scores of all images
        self.image_levels: list[np.ndarray] = []  # ... and where each image's own ones lie

    @property
    def n_faces(self) -> int:
        return sum(len(f) for f in self.faces.values())

    def evaluate(self) -> list[ImageResult]:
        """Match every image at each of its distinct detection scores."""
        self.results = []
        for name in self.images:
            faces, dets = self.faces[name], self.detections[name]
            iou = pixel_iou(faces, dets, self.kind, self.sizes[name])
            self.results.append(ImageResult(name, len(faces), iou,
                                            *match_per_threshold(iou, dets[:, -1])))
        return self.results

    def accumulate(self) -> tuple[ROCCurve, ROCCurve]:
        """Merge the images by score into the discrete and the continuous ROC: at threshold s an
        image counts as at its lowest own score >= s, or as nothing kept above its top score."""
        results = self.evaluate() if self.results is None else self.results
        n = self.n_faces
        thresholds = np.concatenate([np.zeros(0), *(r.thresholds for r in results)])
        levels, level_of = np.unique(thresholds, return_inverse=True)
        self.levels = levels
        ends = np.cumsum([len(r.thresholds) for r in results], dtype=np.int64)
        self.image_levels = [level_of[end - len(r.thresholds):end]
                             for r, end in zip(results, ends, strict=True)]

        def merged(values: str, dtype: type) -> np.ndarray:
            """Per level, the sum over images of their value there: each image adds the step
            from one own score to the next at that score, and sums over levels above count."""
            steps: list[np.ndarray] = [np.zeros(0, dtype)]
            for r in results:
                steps.append(_steps(getattr(r, values)))
            total: np.ndarray = np.zeros(len(levels), dtype)
            np.add.at(total, level_of, np.concatenate(steps))
            return np.cumsum(total[::-1])[::-1]

        tp_disc = merged("tp_disc", np.int64)
        fp = (merged("kept", np.int64) - tp_disc).astype(float)
        tp_cont = merged("tp_cont", np.float64)
        extra = {"n_faces": n, "detections": self.kind}
        self.disc = ROCCurve("FDDB discrete", tp_disc / n if n else np.zeros(len(levels)), fp,
                             levels, dict(extra))
        self.cont = ROCCurve("FDDB continuous", tp_cont / n if n else np.zeros(len(levels)), fp,
                             levels, dict(extra))
        return self.disc, self.cont

    def image_rows(self) -> list[dict[str, Any]]:
        """Each image's share of both ROCs, a row each: its faces, and at each of its own
        distinct scores (`levels`: their places among the `width` distinct scores of all
        images) the detections kept, the matched pairs with IoU > 0.5 and the sum of matched
        IoUs. Merged as accumulate() merges images they give both ROCs; over a resample of the
        images, that resample's (`roc_counts`, `tpr_of_counts`)."""
        if self.results is None or self.disc is None:
            self.accumulate()
        assert self.results is not None
        return [{"image": r.name, "faces": r.n_faces, "width": len(self.levels),
                 "levels": own.tolist(), "kept": r.kept.tolist(), "tp_disc": r.tp_disc.tolist(),
                 "tp_cont": r.tp_cont.tolist()}
                for r, own in zip(self.results, self.image_levels, strict=True)]

    def summarize(self, fp_limit: float = 1000, verbose: bool = False) -> dict[str, float]:
        """TPRs read at `fp_limit` false positives: the best TPR among points with FP <= limit."""
        if self.disc is None or self.cont is None:
            disc, cont = self.accumulate()
        else:
            disc, cont = self.disc, self.cont
        metrics = dict(zip(tpr_names(fp_limit), (disc.tpr_at(fp_limit), cont.tpr_at(fp_limit)),
                           strict=True))
        if verbose:
            for key, value in metrics.items():
                print(f"{key} = {value:.4f} ({self.kind} detections, {self.n_faces} faces)")
        return metrics


def roc_counts(values: Sequence[Any]) -> np.ndarray:
    """An image row's numbers (`FDDBEval.image_rows`: faces, width, levels, kept, tp_disc,
    tp_cont): its faces, then the step each of kept, tp_disc and tp_cont takes at each of the
    `width` distinct scores of all images, as accumulate() adds them. TypeError or ValueError
    for a row that is not one."""
    faces, width, levels, *series = values
    width = row_count(width, "width")
    own = row_indices(levels, width, "levels", increasing=True)
    out = np.zeros(1 + 3 * width)
    out[0] = row_count(faces, "faces")
    for k, found in enumerate(series):
        v = np.asarray(found, dtype=np.float64)
        if not isinstance(found, list) or v.shape != own.shape or not np.isfinite(v).all():
            raise ValueError(f"expected {own.size} finite numbers, one per level")
        out[1 + k * width + own] = _steps(v)
    return out


def _steps(values: np.ndarray) -> np.ndarray:
    """An image's values at its own scores (ascending) as the steps it adds at each: the value
    there less the value at its next score up (0 above its top one), so the sums over images
    from the top down give every image's value at any score."""
    return values - np.append(values[1:], 0)


def tpr_of_counts(counts: np.ndarray, continuous: bool, fp_limit: float) -> float:
    """The TPR read at `fp_limit` false positives from images' `roc_counts` rows (or their
    sums): what the ROC of those images gives at the whole set's distinct scores (a score no
    chosen image has repeats the point below it, which leaves the reading unchanged)."""
    total = np.asarray(counts.sum(axis=0)).ravel()
    width = (len(total) - 1) // 3
    kept, disc, cont = (np.cumsum(total[1 + k * width:1 + (k + 1) * width][::-1])[::-1]
                        for k in range(3))
    tp = cont if continuous else disc
    tpr = tp / total[0] if total[0] else np.zeros(width)
    return ROCCurve("", tpr, kept - disc, np.zeros(width)).tpr_at(fp_limit)


def tpr_names(fp_limit: float) -> tuple[str, str]:
    """The names of the discrete and continuous TPRs read at `fp_limit` false positives."""
    return f"tpr_disc@{fp_limit:g}", f"tpr_cont@{fp_limit:g}"


class FDDBEvaluator:
    """A face detector on the chosen FDDB folds: per mode, the official detection file
    (`fddb_detections_<mode>.txt` in the work folder, rectangles), the true-positive rates read
    at `fp` false positives, both ROCs and the ms each image took."""

    name = "fddb"
    config_model = FDDBEvalConfig
    needs = FaceDetector

    def higher_is_better(self, metric: str) -> bool | None:
        return direction(metric, lambda name: name.startswith("tpr_"))

    def metrics(self, config: FDDBEvalConfig) -> list[str]:
        return mode_metrics(config, tpr_names(config.fp))

    def is_proxy(self, config: FDDBEvalConfig) -> bool:
        return False  # no `proxy:` key: a suite on proxy images says so in its report notes

    def per_example(self, metric: str) -> PerExample | None:
        """`<mode>.tpr_disc@<fp>` and `tpr_cont@<fp>` from the per-image rows
        (`FDDBEval.image_rows`): each image adds its counts at its own scores, so a resample
        of images is a weighted sum of those, read at the whole set's distinct scores."""
        mode, _, name = metric.partition(".")
        found = re.fullmatch(r"tpr_(disc|cont)@(.+)", name)
        if mode not in get_args(Mode) or found is None:
            return None
        try:
            fp_limit = float(found[2])
        except ValueError:
            return None
        return PerExample(mode, ("image",),
                          ("faces", "width", "levels", "kept", "tp_disc", "tp_cont"),
                          partial(tpr_of_counts, continuous=found[1] == "cont",
                                  fp_limit=fp_limit),
                          expand=roc_counts, summed=True)

    def inputs(self, config: FDDBEvalConfig, data_root: str | None) -> dict[str, str]:
        return {part: str(Path(config.root) / part) for part in ("FDDB-folds", "originalPics")}

    def check(self, config: FDDBEvalConfig, data_root: str | None) -> None:
        _, paths, listed_in = _folds(config)
        check_images(paths, listed_in)

    def evaluate(self, config: FDDBEvalConfig, model: FaceDetector,
                 setting: EvalSetting) -> EvalResult:
        faces, paths, listed_in = _folds(config)
        names = list(faces)
        sizes = image_sizes_from_dir(Path(config.root) / "originalPics", names)

        def score(mode: Mode, size: Size) -> ModeScored:
            dets, took = model.detect(paths, mode, size, listed_in)
            # inclusive corners x1..x2 are drawn by the official tool as round(x)..round(x + w)
            rects = {n: np.c_[d[:, :2], d[:, 2:4] - d[:, :2], d[:, 4]]
                     for n, d in zip(names, dets, strict=True)}
            write_fddb_detections(setting.workdir / f"fddb_detections_{mode}.txt", rects, "rect")
            ev = FDDBEval(faces, rects, sizes, kind="rect")
            disc, cont = ev.accumulate()
            return ModeScored(ev.summarize(config.fp), {"discrete": disc, "continuous": cont},
                              took, ev.image_rows())

        return score_modes(config, score)


def _folds(config: FDDBEvalConfig) -> tuple[dict[str, np.ndarray], list[Path], str]:
    """The chosen folds' faces by image name, the image of each name and where they are
    listed."""
    root = Path(config.root)
    faces = read_fddb_folds(root / "FDDB-folds", config.folds)
    return faces, [root / "originalPics" / f"{n}.jpg" for n in faces], str(root / "FDDB-folds")


EVALUATOR: Evaluator[FDDBEvalConfig, FaceDetector] = FDDBEvaluator()
