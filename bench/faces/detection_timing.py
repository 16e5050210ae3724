"""Detector speed as the SSH paper's Table 2 reports it: ms per image at a maximum input size.

Timing covers the network and the box work (decode, top-k, NMS) of one image, synchronised on a
GPU. Every configuration compared (model, size, single scale or pyramid) is timed in the same
interleaved rounds after warm-up (`bench.util.timing.interleaved`), and reported as the median with
its spread. An image of exactly the named size goes through the same scale policy as
evaluation: single scale keeps it at that size; the pyramid resizes it to its four levels (and
skips M3 on the largest).
"""

from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from bench.evals.adapters import Mode, Size
from bench.faces.inference import detect_scales, pyramid_scales, single_scale
from bench.util.timing import Timing, interleaved

# The paper's Quadro P6000 timings of SSH, ms per image, by maximum input size (short, long).
PAPER_MS_P6000 = {(400, 800): 48, (600, 1000): 74, (800, 1200): 107, (1200, 1600): 182}


def detection_task(model: torch.nn.Module, specs: dict, size: Size, mode: Mode,
                   device: torch.device, *, bf16: bool = False,
                   channels_last: bool = False) -> Callable[[], None]:
    """One detection on an image of `size` (short, long) at a single scale or the pyramid,
    as a call to time; the image is made once, outside the timed call."""
    short, long = size
    image = torch.randn(3, short, long, device=device) * 50
    if mode == "pyramid":
        scales, skip = pyramid_scales(short, long, short, long), {"M3"}
    else:
        scales, skip = [single_scale(short, long, short, long)], set()
    model_fn = detector_fn(model, device, bf16, channels_last)

    def detect() -> None:
        detect_scales(model_fn, image, specs, scales, skip_on_largest=skip)

    return detect


def time_detection(models: Mapping[Hashable, tuple[torch.nn.Module, dict]], sizes: Sequence[Size],
                   modes: Sequence[Mode], device: torch.device, *, warmup: int, repeats: int,
                   bf16: bool = False,
                   channels_last: bool = False) -> dict[tuple[Hashable, Mode, Size], Timing]:
    """ms per image of every (model, mode, size), all timed in the same interleaved rounds so
    that load on the machine falls on each alike."""
    tasks = {}
    for name, (model, specs) in models.items():
        model.eval()
        for size in sizes:
            for mode in modes:
                tasks[name, mode, size] = detection_task(model, specs, size, mode, device,
                                                         bf16=bf16, channels_last=channels_last)
    return interleaved(tasks, warmup=warmup, repeats=repeats, sync=lambda: sync(device))


def detector_fn(model: torch.nn.Module, device: torch.device, bf16: bool = False,
                channels_last: bool = False) -> Any:
    """The network as inference calls it: bf16 autocast and channels-last where asked, float32
    outputs for the box work."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def model_fn(x: torch.Tensor, modules: set[str]) -> Any:
        with autocast:
            outputs = model(x.contiguous(memory_format=memory_format), modules)
        return {k: (c.float(), r.float()) for k, (c, r) in outputs.items()}

    return model_fn


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
