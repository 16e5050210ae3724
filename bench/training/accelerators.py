"""Accelerator peaks and the efficiency figures of a training run (FLOP/s, MFU).

MFU (model FLOPs utilisation) is the FLOPs a run's steps needed (forward and backward, as the
budget counts them: `bench.training.flops`) per second of wall time over the device's peak. The
peak is the vendor datasheet's dense tensor-core throughput (no 2:4 sparsity) at the precision the
training loop uses on a GPU: bf16 with fp32 accumulation; fp16 on cards whose tensor cores have
no bf16 (V100, T4); fp32 on cards with no tensor cores at all (Quadro P6000). Devices are
matched on the name `torch.cuda.get_device_name()` gives. A card that is not listed, or that is
listed without a sourced peak, has no MFU rather than a guessed one.
"""

import math
import re
from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True)
class Accelerator:
    """One device model: the pattern its reported names match, and its peak (None: not known)."""

    name: str
    pattern: str
    peak_tflops: float | None


# First match wins, so the names that contain another's (H100 PCIe / H100, A100 / A10,
# V100S / V100) come before it; confusable cards with no sourced peak are listed with None so
# that no broader pattern claims them. Names are matched lower-cased with single spaces.
ACCELERATORS: tuple[Accelerator, ...] = (
    # NVIDIA H100 datasheet: PCIe BF16 Tensor Core 1,513 TFLOPS with sparsity -> 756 dense.
    Accelerator("H100 PCIe", r"\bh100\b.*\bpcie\b", 756.0),
    # H100 NVL and H200 NVL: PCIe cards with their own, lower clocks; no sourced dense figure.
    Accelerator("H100 NVL", r"\bh100\b.*\bnvl\b", None),
    Accelerator("H200 NVL", r"\bh200\b.*\bnvl\b", None),
    # NVIDIA H100 datasheet: SXM BF16 Tensor Core 1,979 TFLOPS with sparsity -> 989 dense;
    # "NVIDIA H100 80GB HBM3" is the SXM part. H200 datasheet: the same 1,979 / 989 (SXM).
    Accelerator("H100 SXM", r"\bh100\b", 989.0),
    Accelerator("H200", r"\bh200\b", 989.0),
    # NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with sparsity), SXM and PCIe.
    # The A100X (converged accelerator) is another board: \b keeps "a100x" out of this pattern.
    Accelerator("A100", r"\ba100\b", 312.0),
    # NVIDIA A10 datasheet: BF16 Tensor Core 125 TFLOPS dense (250 with sparsity). The A10G
    # (AWS) is a different board whose peak NVIDIA does not publish.
    Accelerator("A10G", r"\ba10g\b", None),
    Accelerator("A10", r"\ba10\b", 125.0),
    # NVIDIA A40 datasheet: Peak BF16 Tensor TFLOPS with FP32 Accumulate 149.7 (299.4 sparse).
    Accelerator("A40", r"\ba40\b", 149.7),
    # NVIDIA L4 datasheet: BF16 Tensor Core 242 TFLOPS with sparsity -> 121 dense.
    Accelerator("L4", r"\bl4\b", 121.0),
    # NVIDIA L40 / L40S datasheet: BFLOAT16 Tensor Core 181.05 (L40) and 362.05 (L40S) dense.
    Accelerator("L40S", r"\bl40s\b", 362.05),
    Accelerator("L40", r"\bl40\b", 181.05),
    # NVIDIA V100 datasheet, Tensor Performance (fp16): V100S PCIe 130, V100 PCIe 112,
    # V100 SXM2 125 TFLOPS (DGX Station's "V100-DGXS" is the SXM2 part). No bf16 on Volta.
    Accelerator("V100S", r"\bv100s\b", 130.0),
    Accelerator("V100 PCIe", r"\bv100\b.*\bpcie\b", 112.0),
    Accelerator("V100 SXM2", r"\bv100\b.*\b(sxm2|dgxs)\b", 125.0),
    # NVIDIA T4 datasheet: Mixed Precision (FP16/FP32) 65 TFLOPS. No bf16 on Turing.
    Accelerator("T4", r"\btesla t4\b|^(nvidia )?t4$", 65.0),
    # NVIDIA Ampere GA102 whitepaper, appendix C (RTX A6000): Peak BF16 Tensor TFLOPS with FP32
    # Accumulate 154.8 (309.7 sparse).
    Accelerator("RTX A6000", r"\brtx a6000\b", 154.8),
    # RTX 6000 Ada: its datasheet gives fp32 91.1 and sparse fp8 figures; no dense bf16 figure
    # was found, so none is assumed.
    Accelerator("RTX 6000 Ada", r"\brtx 6000 ada\b", None),
    # NVIDIA Ada GPU architecture whitepaper (GeForce RTX 4090): Peak BF16 Tensor TFLOPS with
    # FP32 Accumulate 165.2 (330.4 sparse); GeForce runs FP32 accumulation at half the FP16 rate.
    # The 4090 D and the laptop GPU are other chips' configurations.
    Accelerator("RTX 4090", r"\brtx 4090$", 165.2),
    # NVIDIA Quadro P6000 datasheet: 12 TFLOPS fp32 (Pascal, no tensor cores): the SSH paper's
    # card, so its peak is fp32 FMA throughput.
    Accelerator("Quadro P6000", r"\bquadro p6000\b", 12.0),
)


def normalize(device_name: str) -> str:
    """Lower case, single spaces, no surrounding space: how names are matched."""
    return " ".join(device_name.lower().split())


def find_accelerator(device_name: str) -> Accelerator | None:
    """The table's entry for a reported device name; None for devices it does not list."""
    name = normalize(device_name)
    return next((acc for acc in ACCELERATORS if re.search(acc.pattern, name)), None)


def peak_flops(device_name: str) -> float | None:
    """The device's dense peak in FLOP/s; None for CPUs and unknown or unsourced devices."""
    acc = find_accelerator(device_name)
    return None if acc is None or acc.peak_tflops is None else acc.peak_tflops * TERA


def efficiency_metrics(flops: float, seconds: float, device_name: str,
                       world_size: int = 1) -> dict[str, float]:
    """`flops_per_s`: all ranks' model FLOPs over wall seconds; `mfu`: that over the summed
    peaks of the `world_size` devices, only where the device's peak is known."""
    if not (math.isfinite(flops) and flops >= 0):
        raise ValueError(f"FLOPs must be finite and non-negative, got {flops}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"wall seconds must be finite and positive, got {seconds}")
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    metrics = {"flops_per_s": flops / seconds}
    peak = peak_flops(device_name)
    if peak is not None:
        metrics["mfu"] = metrics["flops_per_s"] / (peak * world_size)
    return metrics
