"""SSH training targets and loss: anchor labels, OHEM or random sampling, softmax CE + smooth L1.

As published, and as py-faster-rcnn's anchor target layer (which SSH's extends) computes it:

- Labels: positive if the anchor's best IoU (+1 areas) with a face is >= 0.5, negative if < 0.3,
  ignored in between; no anchor is forced positive for the face it overlaps best.
- Border: only anchors inside the image are labelled (x1, y1 >= -allowed_border,
  x2 < w + allowed_border, y2 < h + allowed_border); cross-border anchors are ignored, never
  negatives. SSH's training prototxt gives M3's target layer allowed_border 512 and leaves M1 and
  M2 at py-faster-rcnn's 0: `allowed_border` is a number or a per-module mapping
  (`border_for(specs)` gives the published one). Cells that only batch padding covers are
  ignored whatever the border (`cells_inside` on each image's true size).
- Sampling, per module and per image: 256 anchors, at most 25% (64) positive. OHEM keeps the
  positives with the LOWEST face score and fills the remaining 256 - n_pos slots with the
  HIGHEST-scoring negatives (scores: the softmax of the current logits, no gradient); ties go to
  the lower anchor index. Without OHEM, py-faster-rcnn's uniform sampling without replacement.
- Loss, per module and image: softmax CE averaged over the sampled anchors (Caffe's
  SoftmaxWithLoss, ignore label -1, VALID normalisation); smooth L1 with sigma 3 on the
  positives' (dx, dy, log dw, log dh), summed over coordinates and positives and divided by the
  number of sampled anchors (py-faster-rcnn's bbox_outside_weights = 1 / n_sampled). A count of 0
  divides by 1, as Caffe's normaliser does. Targets are raw, not normalised by means and stds.
- Several images: each image's loss is computed on its own, as SSH runs one image per GPU, and
  the images are averaged (Caffe averages the GPUs' gradients); the modules' losses are summed.
  Random sampling draws from one generator per image (`image_generators`: seeded by the seed,
  the step and the image's position in the step's global batch), so an image's anchors do not
  depend on which process holds it or on its neighbours.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bench.faces.anchors import Outputs, box_iou_plus1, cells_inside, encode, flatten_outputs

BATCH_PER_MODULE = 256
FG_FRACTION = 0.25
SIGMA = 3.0


def anchors_inside(anchors: Tensor, image_hw: tuple[int, int],
                   allowed_border: float = 0.0) -> Tensor:
    """Anchors within the image up to `allowed_border` px (py-faster-rcnn's inds_inside)."""
    h, w = image_hw
    b = allowed_border
    return ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
            & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b))


def label_anchors(anchors: Tensor, gt_boxes: Tensor, pos: float = 0.5, neg: float = 0.3, *,
                  valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Labels (1 face, 0 background, -1 ignored) and each anchor's best gt index (-1 if none).

    Only anchors in `valid` (all when None) get a label; the others are ignored.
    """
    n = anchors.shape[0]
    labels = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    matched = torch.full((n,), -1, dtype=torch.long, device=anchors.device)
    idx = (torch.arange(n, device=anchors.device) if valid is None
           else valid.nonzero().squeeze(1))
    if gt_boxes.shape[0] == 0:
        labels[idx] = 0
        return labels, matched
    best, arg = box_iou_plus1(anchors[idx], gt_boxes).max(dim=1)
    matched[idx] = arg
    sub = torch.full_like(arg, -1)
    sub[best < neg] = 0
    sub[best >= pos] = 1
    labels[idx] = sub
    return labels, matched


def _keep(labels: Tensor, inds: Tensor, value: int) -> Tensor:
    """`labels` with only `inds` of that class left at `value` (the others ignored)."""
    out = labels.clone()
    out[out == value] = -1
    out[inds] = value
    return out


def ohem_sample(labels: Tensor, face_scores: Tensor, batch: int = BATCH_PER_MODULE,
                fg_fraction: float = FG_FRACTION) -> Tensor:
    """Hardest examples: lowest-scored positives (at most batch * fg_fraction), then the
    highest-scored negatives in the slots left."""
    fg = (labels == 1).nonzero().squeeze(1)
    num_fg = int(fg_fraction * batch)
    if fg.numel() > num_fg:
        order = torch.sort(face_scores[fg], stable=True).indices
        labels = _keep(labels, fg[order[:num_fg]], 1)
    num_bg = batch - int((labels == 1).sum())
    bg = (labels == 0).nonzero().squeeze(1)
    if bg.numel() > num_bg:
        order = torch.sort(face_scores[bg], descending=True, stable=True).indices
        labels = _keep(labels, bg[order[:num_bg]], 0)
    return labels


def random_sample(labels: Tensor, generator: torch.Generator, batch: int = BATCH_PER_MODULE,
                  fg_fraction: float = FG_FRACTION) -> Tensor:
    """py-faster-rcnn's sampling: a uniform subset of each class, drawn with `generator` (CPU)."""
    def pick(inds: Tensor, k: int) -> Tensor:
        perm = torch.randperm(inds.numel(), generator=generator)[:k]
        return inds[perm.to(inds.device)]

    fg = (labels == 1).nonzero().squeeze(1)
    num_fg = int(fg_fraction * batch)
    if fg.numel() > num_fg:
        labels = _keep(labels, pick(fg, num_fg), 1)
    num_bg = batch - int((labels == 1).sum())
    bg = (labels == 0).nonzero().squeeze(1)
    if bg.numel() > num_bg:
        labels = _keep(labels, pick(bg, num_bg), 0)
    return labels


def image_generators(seed: int, step: int, positions: Sequence[int]) -> list[torch.Generator]:
    """One sampling generator per image, keyed by (seed, step, position in the step's global
    batch) through numpy's SeedSequence, which mixes the three into well-spread 64-bit seeds."""
    return [torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, p]).generate_state(1, np.uint64)[0]))
        for p in positions]


def border_for(specs: dict[str, tuple[int, tuple[int, ...]]]) -> dict[str, float]:
    """SSH's allowed border per module: 512 px where the module carries the 256/512 anchors (M3
    in SSH's prototxt; M2 in the M2-only ablation, which carries them all), else 0."""
    return {name: 512.0 if max(sizes) >= 256 else 0.0 for name, (_, sizes) in specs.items()}


def smooth_l1(x: Tensor, sigma: float = SIGMA) -> Tensor:
    """py-faster-rcnn's smooth L1: 0.5 s^2 x^2 where |x| < 1 / s^2, else |x| - 0.5 / s^2."""
    s2 = sigma * sigma
    ax = x.abs()
    return torch.where(ax < 1.0 / s2, 0.5 * s2 * x * x, ax - 0.5 / s2)


def image_loss(logits: Tensor, deltas: Tensor, anchors: Tensor, gt_boxes: Tensor,
               image_hw: tuple[int, int], ohem: bool, generator: torch.Generator | None = None,
               allowed_border: float = 0.0) -> tuple[Tensor, Tensor]:
    """(CE, box loss) of one module on one image: logits [N, 2], deltas [N, 4], anchors [N, 4]."""
    valid = cells_inside(anchors, image_hw) & anchors_inside(anchors, image_hw, allowed_border)
    labels, matched = label_anchors(anchors, gt_boxes, valid=valid)
    if ohem:
        labels = ohem_sample(labels, logits.detach().softmax(dim=-1)[:, 1])
    elif generator is None:
        raise ValueError("random sampling (ohem: false) needs a torch.Generator")
    else:
        labels = random_sample(labels, generator)
    sampled = labels >= 0
    count = max(1, int(sampled.sum()))
    ce = F.cross_entropy(logits[sampled], labels[sampled], reduction="sum") / count
    pos = labels == 1
    targets = encode(anchors[pos], gt_boxes[matched[pos]])
    box = smooth_l1(deltas[pos] - targets).sum() / count
    return ce, box


def ssh_loss(outputs: Outputs, anchors_per_module: dict[str, Tensor],
             gt_boxes_per_image: list[Tensor], image_sizes: list[tuple[int, int]], ohem: bool,
             generators: Sequence[torch.Generator] | None = None,
             allowed_border: float | dict[str, float] = 0.0
             ) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its detached parts ("M1/cls", "M1/box", ...) over a padded batch.

    gt boxes and sizes are per image, in the resized (network input) pixels of that image;
    random sampling (`ohem` false) draws image b's anchors with `generators[b]`.
    """
    parts: dict[str, Tensor] = {}
    total: Tensor | None = None
    for name, (cls, reg) in outputs.items():
        logits, deltas = flatten_outputs(cls, reg)
        anchors = anchors_per_module[name]
        if anchors.shape[0] != logits.shape[1]:
            raise ValueError(f"{name}: {anchors.shape[0]} anchors for {logits.shape[1]} outputs")
        if not len(gt_boxes_per_image) == len(image_sizes) == logits.shape[0]:
            raise ValueError(f"{logits.shape[0]} images, {len(gt_boxes_per_image)} gt lists, "
                             f"{len(image_sizes)} sizes")
        if generators is not None and len(generators) != logits.shape[0]:
            raise ValueError(f"{logits.shape[0]} images, {len(generators)} generators")
        per_image = [image_loss(logits[b], deltas[b], anchors, gt_boxes_per_image[b],
                                image_sizes[b], ohem,
                                None if generators is None else generators[b],
                                allowed_border[name] if isinstance(allowed_border, dict)
                                else allowed_border)
                     for b in range(logits.shape[0])]
        ce = torch.stack([c for c, _ in per_image]).mean()
        box = torch.stack([x for _, x in per_image]).mean()
        parts[f"{name}/cls"] = ce.detach()
        parts[f"{name}/box"] = box.detach()
        total = ce + box if total is None else total + ce + box
    if total is None:
        raise ValueError("no module outputs to train")
    return total, parts
