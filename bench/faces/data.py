"""WIDER FACE training data in the official layout (`WIDER_<split>/images/<event>/<name>.jpg`,
`wider_face_split/wider_face_<split>_bbx_gt.txt`), and the two input transforms SSH trains with.

Choices, following py-faster-rcnn where SSH's code builds on it:
- Boxes are 0-based inclusive pixel corners [x1 y1 x2 y2] with x2 = x + w - 1, y2 = y + h - 1
  (py-faster-rcnn's convention: widths are x2 - x1 + 1, and its flip formula assumes it).
- Faces marked invalid and boxes with w <= 0 or h <= 0 (among them the all-zero line of a
  face-free image) are dropped. Images left without faces stay listed with a 0 x 4 box array;
  whether to sample them is the trainer's decision.
- Images are read as stored, ignoring EXIF orientation: the annotations refer to the stored
  pixel grid (the official MATLAB tools read it that way).
- Resizing is prep_im_for_blob's: scale the shortest side to `short` unless the longest side
  would then exceed `long_max` (after rounding), in which case the longest side gets `long_max`;
  one factor for both axes, cv2.INTER_LINEAR, boxes multiplied by the same factor.
"""

from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.evals.wider import ATTRIBUTES, ImageKey, load_wider_bbx_gt

SPLITS = ("train", "val")
_INVALID = ATTRIBUTES.index("invalid")


def wider_to_corners(boxes: np.ndarray) -> np.ndarray:
    """[x y w h] rows as inclusive [x1 y1 x2 y2] rows, float32."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - 1], axis=1)


class WiderTrainSet:
    """The images of one split with their usable face boxes, in the annotation file's order."""

    def __init__(self, root: Path | str, split: str = "train") -> None:
        if split not in SPLITS:
            raise UserError(f"WIDER split {split!r}: expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.annotations = self.root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        self.images_dir = self.root / f"WIDER_{split}" / "images"
        gt = load_wider_bbx_gt(self.annotations)
        assert gt.attributes is not None  # the text files always carry them
        self.keys: list[ImageKey] = gt.images
        self.boxes: list[np.ndarray] = []
        for key in self.keys:
            b, attributes = gt.boxes[key], gt.attributes[key]
            keep = (attributes[:, _INVALID] == 0) & (b[:, 2] > 0) & (b[:, 3] > 0)
            self.boxes.append(wider_to_corners(b[keep]))

    def __len__(self) -> int:
        return len(self.keys)

    def path(self, i: int) -> Path:
        event, name = self.keys[i]
        return self.images_dir / event / f"{name}.jpg"

    def load_image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(H x W x 3 uint8 BGR image, N x 4 float32 boxes [x1 y1 x2 y2]); the boxes are a copy."""
        return read_image(self.path(i), str(self.annotations)), self.boxes[i].copy()

    def stored_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image i as stored, from its header alone: a batch's padded shape
        is known without decoding the images other processes load."""
        from PIL import Image

        path = self.path(i)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, Image.DecompressionBombError) as err:
            raise UserError(f"{path}: image missing or unreadable ({err}; listed in "
                            f"{self.annotations})") from None
        return height, width


def read_image(path: Path, listed_in: str) -> np.ndarray:
    """The H x W x 3 uint8 BGR pixels as stored (EXIF orientation ignored); `listed_in` names
    the file that lists the image, for the error."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise UserError(f"{path}: image missing or unreadable (listed in {listed_in})")
    return image


def training_scale(h: int, w: int, short: int, long_max: int) -> float:
    """The factor the shortest/longest-side policy resizes an h x w image by."""
    if short <= 0 or long_max <= 0:
        raise ValueError(f"short {short} and long_max {long_max} must be positive")
    scale = short / min(h, w)
    if np.round(scale * max(h, w)) > long_max:
        scale = long_max / max(h, w)
    return scale


def resized_shape(h: int, w: int, scale: float) -> tuple[int, int]:
    """The (height, width) cv2.resize gives for factor `scale`: it rounds each side half to
    even, as `round` does."""
    return round(h * scale), round(w * scale)


def resize_for_training(image: np.ndarray, boxes: np.ndarray, short: int,
                        long_max: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(resized image, scaled boxes, scale) under the shortest/longest-side policy."""
    import cv2

    h, w = image.shape[:2]
    scale = training_scale(h, w, short, long_max)
    resized = cv2.resize(image, None, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return resized, np.asarray(boxes, dtype=np.float32) * np.float32(scale), scale


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; inclusive boxes map as x1' = W - x2 - 1, x2' = W - x1 - 1."""
    width = image.shape[1]
    boxes = np.asarray(boxes, dtype=np.float32)
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2] - 1
    flipped[:, 2] = width - boxes[:, 0] - 1
    return np.ascontiguousarray(image[:, ::-1]), flipped
