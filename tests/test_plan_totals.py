"""`bench plan`'s totals: FLOPs and items per variant and for the suite, device-hours at an
accelerator's peak, and a warning when variants under one tokens or steps budget do not spend
equal compute. The toy family prices a step at 6 x width x batch FLOPs and batch rows."""

from pathlib import Path

import pytest

from bench.cli import main

pytestmark = pytest.mark.usefixtures("toy")


def _suite(tmp_path: Path, budget: str) -> Path:
    path = tmp_path / "totals.yaml"
    path.write_text(f"""suite: totals
family: toy
seeds: [0, 1]
budget: {budget}
evals: []
variants:
  narrow: {{}}
  wide: {{width: 80}}
""")
    return path


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, list[str]], str]:
    """The totals table's rows by label, and what went to stderr."""
    assert main(["plan", *args]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("total "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1:]}, captured.err


def test_totals_add_up_each_variants_runs_and_the_suite(tmp_path, capsys):
    rows, err = _plan(capsys, str(_suite(tmp_path, "{flops: 153600}")))
    narrow_steps, wide_steps = 153600 // (6 * 8 * 16), 153600 // (6 * 80 * 16)  # 200 and 20
    assert rows["narrow"][:3] == ["2", f"{2 * narrow_steps * 6 * 8 * 16:.3g}",
                                  f"{2 * narrow_steps * 16:.3g}"]
    assert rows["wide"][:3] == ["2", f"{2 * wide_steps * 6 * 80 * 16:.3g}",
                                f"{2 * wide_steps * 16:.3g}"]
    assert rows["suite"][:3] == ["4", f"{4 * 153600:.3g}",
                                 f"{2 * (narrow_steps + wide_steps) * 16:.3g}"]
    assert len(rows["suite"]) == 3  # no device-hours without an accelerator
    assert err == ""  # a flops budget is equal compute by construction


def test_device_hours_at_an_accelerators_peak_and_mfu(tmp_path, capsys):
    rows, _ = _plan(capsys, str(_suite(tmp_path, "{flops: 153600}")), "--accelerator", "A100",
                    "--mfu", "0.5")
    assert float(rows["suite"][3]) == pytest.approx(4 * 153600 / (312e12 * 0.5) / 3600,
                                                    rel=1e-3)


def test_variants_unequal_in_flops_under_one_steps_budget_are_pointed_out(tmp_path, capsys):
    rows, err = _plan(capsys, str(_suite(tmp_path, "{steps: 10}")))
    assert rows["wide"][1] == f"{2 * 10 * 6 * 80 * 16:.3g}"
    assert ("warning: under one budget of 10 steps, wide spends 10.00x the FLOPs of narrow a "
            "run (narrow 7.68e+03, wide 7.68e+04): not equal compute") in err


def test_a_seconds_budget_counts_wall_time_on_every_process(tmp_path, capsys):
    rows, err = _plan(capsys, str(_suite(tmp_path, "{seconds: 90}")), "--nproc", "2",
                      "--accelerator", "h100")
    # label, runs, FLOPs (none known), rows, timed hours, device-hours
    assert rows["suite"][:4] == ["4", "0", "0", f"{4 * 90 / 3600:.3g}"]
    assert float(rows["suite"][4]) == pytest.approx(4 * 90 * 2 / 3600)
    assert err == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--accelerator", "tpu-v5"], "--accelerator tpu-v5: not a known accelerator; known: "
                                  "H100 PCIe, H100 SXM"),
    (["--accelerator", "A10G"], "--accelerator A10G: no known peak"),
    (["--accelerator", "h100", "--mfu", "1.5"], "--mfu 1.5: expected a fraction of the peak"),
    (["--accelerator", "h100", "--mfu", "nan"], "--mfu nan: expected a fraction"),
])
def test_an_unknown_accelerator_or_an_impossible_mfu_is_a_usage_error(tmp_path, capsys, args,
                                                                       message):
    assert main(["plan", str(_suite(tmp_path, "{steps: 10}")), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
