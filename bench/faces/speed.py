"""Detector speed as the SSH paper's Table 2 reports it: ms per image at a maximum input size.

Timing covers the network and the box work (decode, top-k, NMS) of one image, after warm-up,
synchronised on a GPU, and reports the median. An image of exactly the named size goes through
the same scale policy as evaluation: single scale keeps it at that size; the pyramid resizes it
to its four levels (and skips M3 on the largest).
"""

import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from bench.faces.inference import detect_scales, pyramid_scales, single_scale

# The paper's Quadro P6000 timings of SSH, ms per image, by maximum input size (short, long).
PAPER_MS_P6000 = {(400, 800): 48, (600, 1000): 74, (800, 1200): 107, (1200, 1600): 182}


def time_detector(model: torch.nn.Module, specs: dict, size: tuple[int, int], mode: str,
                  device: torch.device, *, warmup: int = 2, repeats: int = 5,
                  bf16: bool = False, channels_last: bool = False) -> float:
    """Median milliseconds to detect faces in one image of `size` (short, long)."""
    short, long = size
    image = torch.randn(3, short, long, device=device) * 50
    if mode == "pyramid":
        scales, skip = pyramid_scales(short, long, short, long), {"M3"}
    else:
        scales, skip = [single_scale(short, long, short, long)], set()
    model_fn = detector_fn(model, device, bf16, channels_last)
    model.eval()
    times = []
    for i in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        detect_scales(model_fn, image, specs, scales, skip_on_largest=skip)
        sync(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
