"""Accelerator peaks matched on real `torch.cuda.get_device_name()` strings, and MFU arithmetic."""

import pytest

from bench.training.accelerators import (
    ACCELERATORS,
    efficiency_metrics,
    find_accelerator,
    peak_flops,
)

T = 1e12


@pytest.mark.parametrize(("device_name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100", 989.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-SXM4-40GB", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA A10", 125.0),
    ("NVIDIA A40", 149.7),
    ("NVIDIA L4", 121.0),
    ("NVIDIA L40", 181.05),
    ("NVIDIA L40S", 362.05),
    ("Tesla V100-SXM2-16GB", 125.0),
    ("Tesla V100-SXM2-32GB", 125.0),
    ("Tesla V100-DGXS-32GB", 125.0),
    ("Tesla V100-PCIE-16GB", 112.0),
    ("Tesla V100S-PCIE-32GB", 130.0),
    ("Tesla T4", 65.0),
    ("NVIDIA RTX A6000", 154.8),
    ("NVIDIA GeForce RTX 4090", 165.2),
    ("Quadro P6000", 12.0),
    ("  nvidia   h100  pcie ", 756.0),  # case and spacing do not matter
])
def test_known_devices_get_their_datasheet_peak(device_name: str, tflops: float) -> None:
    assert peak_flops(device_name) == pytest.approx(tflops * T)


@pytest.mark.parametrize("device_name", [
    "NVIDIA A10G",            # not an A10
    "NVIDIA A100X",           # not an A100
    "NVIDIA H100 NVL",        # not an SXM H100
    "NVIDIA H200 NVL",
    "NVIDIA RTX 6000 Ada Generation",  # no sourced dense bf16 figure
    "Quadro RTX 6000",        # Turing, not the A6000
    "NVIDIA GeForce RTX 4090 D",
    "NVIDIA GeForce RTX 4090 Laptop GPU",
    "NVIDIA GeForce RTX 3090",
    "AMD Instinct MI300X",
    "cpu",
    "Test CPU",
    "",
])
def test_unknown_confusable_and_cpu_devices_have_no_peak(device_name: str) -> None:
    assert peak_flops(device_name) is None


def test_every_listed_pattern_is_reachable() -> None:
    """No entry is shadowed by an earlier one: each matches its own name first."""
    for acc in ACCELERATORS:
        assert find_accelerator(acc.name) is acc, acc.name


def test_mfu_is_model_flops_per_second_over_the_summed_peaks() -> None:
    # 4 A100s doing 624 TFLOPs of model work in 2 s: 312 TFLOP/s against 4 x 312 -> 25%.
    metrics = efficiency_metrics(624 * T, 2.0, "NVIDIA A100-SXM4-80GB", world_size=4)
    assert metrics == pytest.approx({"flops_per_s": 312 * T, "mfu": 0.25})
    assert efficiency_metrics(989 * T, 2.0, "NVIDIA H100 80GB HBM3") == pytest.approx(
        {"flops_per_s": 494.5 * T, "mfu": 0.5})


def test_no_mfu_without_a_known_peak() -> None:
    assert efficiency_metrics(3e9, 1.5, "cpu") == {"flops_per_s": 2e9}
    assert efficiency_metrics(3e9, 1.5, "NVIDIA A10G") == {"flops_per_s": 2e9}


@pytest.mark.parametrize(("flops", "seconds", "world_size"), [
    (1e9, 0.0, 1), (1e9, -1.0, 1), (1e9, float("nan"), 1), (float("inf"), 1.0, 1),
    (-1.0, 1.0, 1), (1e9, 1.0, 0),
])
def test_impossible_inputs_are_refused(flops: float, seconds: float, world_size: int) -> None:
    with pytest.raises(ValueError):
        efficiency_metrics(flops, seconds, "NVIDIA L4", world_size)
