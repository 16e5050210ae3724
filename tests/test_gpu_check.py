"""The GPU check's code path, run as `make gpu-check` runs it but at tiny shapes on the CPU."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu-check") / "nested" / "check.json"
    done = _run("--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), done.stdout


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # about 15 s alone, more on a busy machine
def test_smoke_json_has_every_part_with_sane_values(smoke: tuple[dict, str]) -> None:
    record, _ = smoke
    assert record["device"] == "cpu" and record["smoke"] is True and record["peak_flops"] is None
    lm = record["lm"]
    for objective in ("softmax", "cwt"):
        row = lm[objective]["eager"]
        assert set(row) == {"step_flops", "step_ms", "step_ms_iqr", "peak_memory_bytes",
                            "flops_per_s"}  # no MFU on a CPU
        assert all(_positive(row[k]) for k in ("step_flops", "step_ms", "peak_memory_bytes"))
        assert row["flops_per_s"] == pytest.approx(row["step_flops"] / (row["step_ms"] / 1e3))
        assert "compiled" not in lm[objective]  # inductor is left out of a CPU smoke run
    # The softmax head's K x V logits outweigh CWT's K x K scores at this shape.
    assert lm["softmax"]["eager"]["step_flops"] > lm["cwt"]["eager"]["step_flops"]
    for part in (lm, record["encoder"]):
        assert set(part["softmax/cwt"]) == {"step_ms", "peak_memory_bytes"}
        assert all(_positive(v) for v in part["softmax/cwt"].values())
    assert record["encoder"]["shape"]["cwt"]["batch_size"] == 2 * record["encoder"]["shape"][
        "softmax"]["batch_size"]  # each objective at its own micro-batch, as the suite has it
    [ssh] = record["ssh"]
    assert ssh["size"] == "64x96" and ssh["paper_p6000_ms"] is None
    assert _positive(ssh["headless_ms"]) and _positive(ssh["full_ms"])
    assert record["mfu_goal"] == {"target": 0.35, "compiled_mfu": {"softmax": None, "cwt": None},
                                  "met": None}


@pytest.mark.slow
def test_smoke_prints_the_table_and_the_goal(smoke: tuple[dict, str]) -> None:
    _, stdout = smoke
    assert "device cpu" in stdout and "softmax/cwt (encoder)" in stdout
    assert "MFU goal >= 35% at the pythia-70m shape, compiled: not measured" in stdout


def test_without_cuda_the_check_refuses_clearly(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = _run("--out", str(out))
    assert done.returncode == 2
    assert "error: no CUDA device" in done.stderr and "--smoke" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_the_goal_is_judged_on_every_compiled_objective() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import mfu_goal

    def lm(softmax: float | None, cwt: float | None) -> dict:
        return {o: {"eager": {}, "compiled": {} if v is None else {"mfu": v}}
                for o, v in (("softmax", softmax), ("cwt", cwt))}

    assert mfu_goal(lm(0.40, 0.36))["met"] is True
    assert mfu_goal(lm(0.40, 0.30))["met"] is False
    assert mfu_goal(lm(0.40, None))["met"] is None
