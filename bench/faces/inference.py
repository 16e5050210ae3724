"""SSH inference: per-module decoding, one NMS over everything, single scale and the pyramid.

As published (SSH's test code, py-faster-rcnn style):

- Per module: face score = softmax of the two logits; the top `pre_nms_top` (1000) anchors by
  score are decoded, clipped to the network input and divided by the scale (back to original
  pixels). No per-module NMS. Cells that only batch padding covers give no detections.
- Merge every module and every pyramid level, keep scores > 0.05, one NMS at IoU 0.3.
- NMS with +1 areas, as py-faster-rcnn's: torchvision's `nms` (no +1) run on boxes with x2 + 1,
  y2 + 1, which gives exactly the +1 widths, areas and intersections. A pair at exactly the
  threshold is kept (py-faster-rcnn suppresses IoU > thresh, compared in float32); the threshold is
  rounded to float32 so torchvision's CPU kernel (double compare) agrees with its CUDA one.
- Scales as py-faster-rcnn's prep_im_for_blob: shortest side to `short` unless the longest would
  exceed `long` (tested after rounding), then longest to `long`. The image is resized to
  round(side * scale) with bilinear interpolation (cv2.INTER_LINEAR, no antialiasing); boxes are
  divided by the scale itself, not by the rounded size ratio.
- Single scale: 1200 / 1600. FDDB and Pascal Faces: 400 / 800. Pyramid: the 800 / 1200 scale
  times {500, 800, 1200, 1600} / 800, with M3 skipped on the largest level.
"""

from collections.abc import Callable, Collection, Sequence
from typing import TypedDict, Unpack

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import nms

from bench.faces.anchors import (
    Outputs,
    Specs,
    cells_inside,
    clip_boxes,
    decode,
    flatten_outputs,
    module_anchors,
)

ModelFn = Callable[[Tensor, set[str]], Outputs]

PRE_NMS_TOP = 1000
SCORE_THRESH = 0.05
NMS_THRESH = 0.3
PYRAMID_LEVELS = (500, 800, 1200, 1600)
PYRAMID_REFERENCE = 800  # the level that is the base scale itself


class Thresholds(TypedDict, total=False):
    """The keyword arguments of `detect_scales` that single-scale and pyramid detection pass on."""

    pre_nms_top: int
    score_thresh: float
    nms_thresh: float


def detect(outputs: Outputs, specs: Specs, image_hw: tuple[int, int], scale: float,
           pre_nms_top: int = PRE_NMS_TOP, index: int = 0) -> Tensor:
    """[K, 5] (x1, y1, x2, y2, score) in original pixels for image `index` of the batch.

    `image_hw` is the image's true size at the network input (before any batch padding).
    """
    dets = []
    anchors = module_anchors(outputs, specs)
    for name, (cls, reg) in outputs.items():
        logits, deltas = flatten_outputs(cls[index:index + 1], reg[index:index + 1])
        inside = cells_inside(anchors[name], image_hw)
        scores = logits[0, inside].softmax(dim=-1)[:, 1]
        top = scores.topk(min(pre_nms_top, scores.numel())).indices
        boxes = decode(anchors[name][inside][top], deltas[0, inside][top])
        boxes = clip_boxes(boxes, image_hw[0], image_hw[1]) / scale
        dets.append(torch.cat([boxes, scores[top, None]], dim=1))
    return torch.cat(dets) if dets else torch.zeros(0, 5)


def nms_plus1(boxes: Tensor, scores: Tensor, thresh: float) -> Tensor:
    """Indices kept by py-faster-rcnn's NMS (+1 areas), highest score first."""
    shifted = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    return nms(shifted, scores, float(np.float32(thresh)))


def merge_and_nms(detections: Sequence[Tensor], score_thresh: float = SCORE_THRESH,
                  nms_thresh: float = NMS_THRESH) -> Tensor:
    """All [K, 5] sets merged, scores > score_thresh kept, one NMS; sorted by score."""
    dets = torch.cat(list(detections))
    dets = dets[dets[:, 4] > score_thresh]
    return dets[nms_plus1(dets[:, :4], dets[:, 4], nms_thresh)]


def single_scale(h: int, w: int, short: int = 1200, long: int = 1600) -> float:
    """The scale taking the shortest side to `short`, or the longest to `long` if that is less."""
    scale = short / min(h, w)
    if round(scale * max(h, w)) > long:
        scale = long / max(h, w)
    return scale


def fddb_pascal_scale(h: int, w: int) -> float:
    """The FDDB and Pascal Faces test scale: shortest side 400, longest at most 800."""
    return single_scale(h, w, 400, 800)


def pyramid_scales(h: int, w: int, base_short: int = 800, base_long: int = 1200,
                   levels: Sequence[int] = PYRAMID_LEVELS) -> list[float]:
    """The pyramid's scales: the base_short / base_long scale times each level / 800.

    The factors {500, 800, 1200, 1600} / 800 are the published ones and stay fixed when a
    smaller base (a CPU-sized run) moves the whole pyramid down.
    """
    base = single_scale(h, w, base_short, base_long)
    return [base * level / PYRAMID_REFERENCE for level in levels]


@torch.no_grad()
def detect_scales(model_fn: ModelFn, image: Tensor, specs: Specs, scales: Sequence[float],
                  skip_on_largest: Collection[str] = (), pre_nms_top: int = PRE_NMS_TOP,
                  score_thresh: float = SCORE_THRESH, nms_thresh: float = NMS_THRESH) -> Tensor:
    """Detections [K, 5] of one image [3, H, W] over `scales`, merged before one NMS.

    `model_fn(image [1, 3, h, w], modules)` returns the outputs of the named modules; those in
    `skip_on_largest` are not asked for on the largest scale.
    """
    h, w = image.shape[-2:]
    largest = max(scales)
    dets = []
    for scale in scales:
        size = (round(h * scale), round(w * scale))
        resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        modules = {n for n in specs if not (scale == largest and n in skip_on_largest)}
        dets.append(detect(model_fn(resized, modules), specs, size, scale, pre_nms_top))
    return merge_and_nms(dets, score_thresh, nms_thresh)


def detect_single(model_fn: ModelFn, image: Tensor, specs: Specs, short: int = 1200,
                  long: int = 1600, **kwargs: Unpack[Thresholds]) -> Tensor:
    """Single-scale detection (1200 / 1600; 400 / 800 for FDDB and Pascal Faces)."""
    h, w = image.shape[-2:]
    return detect_scales(model_fn, image, specs, [single_scale(h, w, short, long)], **kwargs)


def detect_pyramid(model_fn: ModelFn, image: Tensor, specs: Specs,
                   **kwargs: Unpack[Thresholds]) -> Tensor:
    """The published pyramid: four levels around the 800 / 1200 scale, M3 off on the largest."""
    h, w = image.shape[-2:]
    return detect_scales(model_fn, image, specs, pyramid_scales(h, w), skip_on_largest={"M3"},
                         **kwargs)
