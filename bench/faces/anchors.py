"""SSH anchors and box arithmetic, in py-faster-rcnn's conventions (mahyarnajibi/SSH builds on it).

Boxes are (x1, y1, x2, y2) in pixels with x2, y2 inclusive: a box is x2 - x1 + 1 wide.

- Anchors: `generate_anchors` with base 16 and ratio 1 only, so every anchor of a cell shares the
  centre (7.5, 7.5) + the cell origin and spans [7.5 - (s - 1) / 2, 7.5 + (s - 1) / 2]:
  size 16 -> [0, 0, 15, 15], 32 -> [-8, -8, 23, 23].
- Order: (y, x, a) with the anchor index fastest, as py-faster-rcnn's shifted anchors;
  `flatten_outputs` puts the network's maps in the same order.
- `encode` / `decode` are `bbox_transform` / `bbox_transform_inv` verbatim. Decode writes
  x2 = ctr + 0.5 w, with no -1, so `decode(a, encode(a, g))` is g + (0, 0, 1, 1): SSH's boxes come
  out one pixel wider and taller than the +1 convention says. Kept, since those are the boxes the
  published model reports and is scored with.
"""

import torch
from torch import Tensor

BASE_SIZE = 16
_BASE_CENTRE = (BASE_SIZE - 1) / 2  # 7.5: the centre of every anchor of the cell at (0, 0)

Specs = dict[str, tuple[int, tuple[int, ...]]]
Outputs = dict[str, tuple[Tensor, Tensor]]


def base_anchors(sizes: tuple[int, ...] | list[int]) -> Tensor:
    """[A, 4] anchors of the cell at the origin, one square per size (py-faster-rcnn, ratio 1)."""
    half = (torch.tensor(sizes, dtype=torch.float32) - 1) / 2
    return torch.stack([_BASE_CENTRE - half, _BASE_CENTRE - half,
                        _BASE_CENTRE + half, _BASE_CENTRE + half], dim=1)


def grid_anchors(h: int, w: int, stride: int, sizes: tuple[int, ...] | list[int],
                 device: torch.device | str | None = None) -> Tensor:
    """[h * w * A, 4] anchors of an h x w map, ordered (y, x, a) with a fastest."""
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base_anchors(sizes).to(device)).reshape(-1, 4)


def module_anchors(outputs: Outputs, specs: Specs) -> dict[str, Tensor]:
    """The anchors of each module in `outputs`, on its map size and device."""
    anchors = {}
    for name, (cls, _) in outputs.items():
        stride, sizes = specs[name]
        anchors[name] = grid_anchors(cls.shape[-2], cls.shape[-1], stride, sizes, cls.device)
    return anchors


def flatten_outputs(cls: Tensor, reg: Tensor) -> tuple[Tensor, Tensor]:
    """[B, A*2, H, W], [B, A*4, H, W] -> [B, H*W*A, 2], [B, H*W*A, 4] in anchor order."""
    b, _, h, w = cls.shape
    a = cls.shape[1] // 2
    if reg.shape != (b, a * 4, h, w):
        raise ValueError(f"bbox deltas {tuple(reg.shape)} do not match scores {tuple(cls.shape)}")
    scores = cls.reshape(b, a, 2, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 2)
    deltas = reg.reshape(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
    return scores, deltas


def cells_inside(anchors: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Anchors whose grid cell starts inside the image (a bool mask).

    Recovers the cell origin from the shared anchor centre, so no stride is needed. On a batch
    padded to one size it drops the cells that only padding covers; on an image's own ceil-mode
    map (and a floor-mode one) every anchor passes.
    """
    h, w = image_hw
    cx = (anchors[:, 0] + anchors[:, 2]) / 2 - _BASE_CENTRE
    cy = (anchors[:, 1] + anchors[:, 3]) / 2 - _BASE_CENTRE
    return (cx < w) & (cy < h)


def _size_and_centre(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0] + 1.0
    h = boxes[..., 3] - boxes[..., 1] + 1.0
    return w, h, boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h


def encode(anchors: Tensor, gt: Tensor) -> Tensor:
    """Regression targets (dx, dy, log dw, log dh) of `gt` from `anchors` (bbox_transform)."""
    aw, ah, ax, ay = _size_and_centre(anchors)
    gw, gh, gx, gy = _size_and_centre(gt)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah,
                        torch.log(gw / aw), torch.log(gh / ah)], dim=-1)


def decode(anchors: Tensor, deltas: Tensor) -> Tensor:
    """Boxes from `anchors` moved by `deltas` (bbox_transform_inv, x2 = ctr + 0.5 w: no -1)."""
    aw, ah, ax, ay = _size_and_centre(anchors)
    cx = deltas[..., 0] * aw + ax
    cy = deltas[..., 1] * ah + ay
    w = torch.exp(deltas[..., 2]) * aw
    h = torch.exp(deltas[..., 3]) * ah
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def clip_boxes(boxes: Tensor, h: int, w: int) -> Tensor:
    """Boxes clipped to the image: x to [0, w - 1], y to [0, h - 1]."""
    x = boxes[..., 0::2].clamp(0, w - 1)
    y = boxes[..., 1::2].clamp(0, h - 1)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def box_iou_plus1(a: Tensor, b: Tensor) -> Tensor:
    """[N, M] IoU with +1 widths and areas (py-faster-rcnn's bbox_overlaps)."""
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2])
          - torch.maximum(a[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3])
          - torch.maximum(a[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    inter = iw * ih
    return inter / (area_a[:, None] + area_b[None, :] - inter)
