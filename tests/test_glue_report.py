"""The Table 1 suite's report: GLUE columns x100 beside the paper's numbers, time ratios."""

from pathlib import Path

import pytest

from bench.cli import main
from bench.evals.glue import PAPER_TASKS
from bench.store.runs import Store

SUITE = Path(__file__).resolve().parent.parent / "suites" / "cwt" / "bert-base-glue.yaml"
# Per variant: a base GLUE task score and training seconds; seeds add small offsets.
MEASURED = {"softmax": (0.80, 1000.0), "cwt": (0.81, 450.0), "cwt_8b": (0.82, 900.0)}


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("OWT2_TRAIN", "PYTHIA_TOKENIZER", "GLUE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    store = Store(tmp_path / "results")
    for variant, (base, seconds) in MEASURED.items():
        for seed in range(3):
            run_id = f"{variant}-{seed}"
            store.begin("cwt-bert-base-glue", variant, seed, run_id, {}, {})
            scores = {f"glue.{t}.score": base + 0.01 * i + 0.002 * seed
                      for i, t in enumerate(PAPER_TASKS)}
            scores["glue.score"] = sum(scores.values()) / len(scores)
            store.finish(run_id, scores | {"train.seconds": seconds + seed, "train.flops": 1e18,
                                           "train.tokens": 4.1e9, "train.tokens_per_s": 1e5},
                         [], {})
    return tmp_path / "results"


def test_table_1_report_shows_glue_columns_paper_rows_and_time_ratios(results, tmp_path):
    out = tmp_path / "reports"
    assert main(["report", str(SUITE), "--results", str(results), "--out", str(out)]) == 0
    html = (out / "cwt-bert-base-glue.html").read_text(encoding="utf-8")
    table = html[html.index("GLUE dev (best epoch of 10)"):]
    table = table[: table.index("</table>")]
    for label in ("MRPC", "CoLA", "STS-B", "SST-2", "QNLI", "QQP", "MNLI", "avg"):
        assert f"<th>{label}</th>" in table or f">{label}<" in table
    # Measured MRPC (first task) for softmax: mean of 80.0, 80.2, 80.4 with a t-interval.
    assert "80.20 ± 0.4968" in table
    # The paper's rows, x100: Table 1's vanilla MRPC and average, headless 8.2B average.
    for number in ("85.87", "82.43", "84.08", "58.35"):
        assert number in table
    assert "softmax (paper)" in table and "cwt_8b (paper)" in table
    # Training time relative to the softmax run: 451/1001 measured, 0.449 in the paper.
    assert "×0.45" in table and "×0.90" in table
