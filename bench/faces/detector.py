"""A trained SSH network as the `FaceDetector` the face evaluators score: images read ahead by
loader workers, single scale or the image pyramid (M3 skipped on its largest level), boxes back
in each image's own pixels, and every detection timed."""

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.evals.adapters import Mode, Size
from bench.faces.anchors import Specs
from bench.faces.batches import DetectionImages
from bench.faces.detection_timing import detector_fn, sync, time_detection
from bench.faces.inference import detect_scales, pyramid_scales, single_scale
from bench.training.loading import StepLoader, to_device
from bench.util.timing import Timing, summarize, timed


class SSHDetector:
    """`model` (in eval mode) on `device`, under bf16 autocast when `bf16`, with `workers`
    processes decoding images ahead of it (none: read inline)."""

    def __init__(self, model: torch.nn.Module, specs: Specs, device: torch.device, bf16: bool,
                 workers: int) -> None:
        self.model, self.specs, self.device = model, specs, device
        self.bf16, self.workers = bf16, workers

    def detect(self, images: Sequence[Path], mode: Mode, size: Size, listed_in: str
               ) -> tuple[list[np.ndarray], Timing]:
        """[x1 y1 x2 y2 score] of every image and the ms each took, summarized
        (`ms_per_image`: the median over the images, after one untimed warm-up detection of the
        first: allocator, kernel choice, caches)."""
        model_fn = detector_fn(self.model, self.device, self.bf16)
        skip = {"M3"} if mode == "pyramid" else set()
        inputs = DetectionImages(images, listed_in)
        out, ms = [], []
        with StepLoader(inputs, self.workers, pin_memory=self.device.type == "cuda") as loader:
            for i in range(len(inputs)):
                tensor = to_device(loader(i), self.device)
                h, w = tensor.shape[-2:]
                scales = (pyramid_scales(h, w, *size) if mode == "pyramid"
                          else [single_scale(h, w, *size)])
                detect = partial(detect_scales, model_fn, tensor, self.specs, scales,
                                 skip_on_largest=skip)
                if i == 0:
                    detect()
                dets, took = timed(detect, sync=lambda: sync(self.device))
                ms.append(took)
                out.append(dets.float().cpu().numpy())
        return out, summarize(ms)

    def time(self, sizes: Sequence[Size], modes: Sequence[Mode], *, warmup: int, repeats: int,
             channels_last: bool) -> dict[tuple[Mode, Size], Timing]:
        """ms per image of synthetic images (`bench.faces.detection_timing`); `channels_last`
        also leaves the model's weights in that memory format for whatever runs after."""
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        timings = time_detection({"model": (self.model, self.specs)}, sizes, modes, self.device,
                                 warmup=warmup, repeats=repeats, bf16=self.bf16,
                                 channels_last=channels_last)
        return {(mode, size): timing for (_, mode, size), timing in timings.items()}
