"""SSH's training batches and evaluation images, built on the CPU (in `bench.training.loading`
workers).

The batch of step k is a pure function of (seed, k): the images it picks and which of them are
flipped are drawn for the whole global batch, then each process takes its share
(`bench.training.distributed.local_part`) and decodes only those images. Every share is padded to
the padded shape of the WHOLE global batch, known from the stored image sizes (read from the image
headers once, when the batches are opened): convolution biases make padded borders differ from
tensor edges, so padding that followed the split would change what the network computes.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from bench.errors import UserError
from bench.faces.config import FacesTrainConfig
from bench.faces.data import (
    WiderTrainSet,
    hflip,
    read_image,
    resize_for_training,
    resized_shape,
    training_scale,
)
from bench.faces.model import to_input
from bench.training.distributed import World, local_part
from bench.training.loading import to_device
from bench.training.sampling import batch_indices


class TrainingBatch(NamedTuple):
    """One process's share of a step's images, as the loss takes them."""

    images: Tensor  # [b, 3, H, W], zero-padded to the whole global batch's shape
    boxes: list[Tensor]  # per image, [x1 y1 x2 y2] in its resized pixels
    sizes: list[tuple[int, int]]  # per image, its resized (height, width) before padding
    step: int
    first: int  # position of images[0] in the step's global batch

    def pin_memory(self) -> "TrainingBatch":
        """Page-locked copies, so the copy to the GPU runs asynchronously (DataLoader calls
        this in its pinning thread)."""
        return self._replace(images=self.images.pin_memory(),
                             boxes=[b.pin_memory() for b in self.boxes])

    def to(self, device: torch.device) -> "TrainingBatch":
        return self._replace(images=to_device(self.images, device),
                             boxes=[to_device(b, device) for b in self.boxes])

    def positions(self) -> range:
        """Each image's position in the step's global batch."""
        return range(self.first, self.first + len(self.boxes))


class TrainingBatches:
    """Item k: this process's `TrainingBatch` of step k, on the CPU."""

    def __init__(self, data: WiderTrainSet, n_images: int, train: FacesTrainConfig, seed: int,
                 world: World) -> None:
        self.data, self.n_images, self.train, self.seed = data, n_images, train, seed
        self.part = local_part(train.batch_size, current=world)
        self.stored = [data.stored_size(i) for i in range(n_images)]

    def picks(self, step: int) -> tuple[list[int], np.ndarray]:
        """The global batch of `step`: image indices and whether each is flipped."""
        picks = batch_indices(self.n_images, step, self.train.batch_size, self.seed).tolist()
        flips = np.random.default_rng([self.seed, step]).random(len(picks)) < 0.5
        return picks, flips & self.train.flip

    def resized(self, i: int) -> tuple[int, int]:
        """Image i's (height, width) once resized for training."""
        h, w = self.stored[i]
        return resized_shape(h, w, training_scale(h, w, self.train.short, self.train.long_max))

    def padded_shape(self, picks: Sequence[int]) -> tuple[int, int]:
        """The shape every image of the global batch is padded to: the largest resized side,
        rounded up to `pad_to`."""
        pad = self.train.pad_to
        shapes = [self.resized(i) for i in picks]
        return (-(-max(h for h, _ in shapes) // pad) * pad,
                -(-max(w for _, w in shapes) // pad) * pad)

    def image(self, i: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Image i and its boxes resized (and flipped), checked against its stored size."""
        image, boxes = self.data.load_image(i)
        if image.shape[:2] != self.stored[i]:
            raise UserError(f"{self.data.path(i)}: decoded {image.shape[0]}x{image.shape[1]}, "
                            f"its header says {self.stored[i][0]}x{self.stored[i][1]}")
        image, boxes, _ = resize_for_training(image, boxes, self.train.short,
                                              self.train.long_max)
        return hflip(image, boxes) if flip else (image, boxes)

    def __getitem__(self, step: int) -> TrainingBatch:
        picks, flips = self.picks(step)
        h, w = self.padded_shape(picks)
        mine = range(len(picks))[self.part]
        images = torch.zeros((len(mine), 3, h, w))  # padding after mean subtraction is zero
        boxes, sizes = [], []
        for k, j in enumerate(mine):
            image, b = self.image(picks[j], bool(flips[j]))
            images[k, :, : image.shape[0], : image.shape[1]] = to_input(image)
            boxes.append(torch.as_tensor(b))
            sizes.append(image.shape[:2])
        return TrainingBatch(images, boxes, sizes, step, mine.start)


class DetectionImages:
    """Item i: image i as the network's input [3, H, W] (read as stored, means subtracted)."""

    def __init__(self, paths: Sequence[Path], listed_in: str) -> None:
        self.paths, self.listed_in = list(paths), listed_in

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return to_input(read_image(self.paths[i], self.listed_in))
