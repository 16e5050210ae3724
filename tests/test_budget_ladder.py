"""Budget ladders: one run per (variant, budget, seed), rungs reused as the ladder grows, and
reports that compare variants at their largest budget."""

import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite

pytestmark = pytest.mark.usefixtures("toy")


def _suite(tmp_path: Path, budget: str, name: str = "ladder.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"""suite: ladder
family: toy
seeds: [0, 1]
budget: {budget}
evals: []
report: {{baseline: narrow, metrics: [val.mse]}}
variants:
  narrow: {{}}
  wide: {{width: 16}}
""")
    return path


def test_every_rung_is_a_run_with_the_id_a_single_budget_gives_it(tmp_path):
    ladder = plan(load_suite(_suite(tmp_path, "{steps: [10, 20, 40]}")))
    assert [(r.variant.name, r.variant.budget.steps, r.seed) for r in ladder] == [
        (v, steps, seed) for v in ("narrow", "wide") for steps in (10, 20, 40)
        for seed in (0, 1)]
    assert len({r.run_id for r in ladder}) == 12
    single = plan(load_suite(_suite(tmp_path, "{steps: 20}", "single.yaml")))
    rung = {(r.variant.name, r.seed): r.run_id for r in ladder if r.variant.budget.steps == 20}
    assert {(r.variant.name, r.seed): r.run_id for r in single} == rung
    assert ladder[0].label == "narrow seed 0 at 10 steps" and single[0].label == "narrow seed 0"


def test_a_grown_ladder_reuses_its_finished_rungs_and_reports_the_largest(tmp_path, capsys):
    results = tmp_path / "results"
    short = _suite(tmp_path, "{steps: [10, 20]}")
    assert main(["plan", str(short)]) == 0
    out = capsys.readouterr().out
    assert "8 runs" in out and out.count("train: 10 steps -> 10 steps") == 4
    assert main(["run", str(short), "--results", str(results), "--no-progress"]) == 0
    capsys.readouterr()
    grown = _suite(tmp_path, "{steps: [10, 20, 40]}")
    assert main(["run", str(grown), "--results", str(results), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 8
    assert out.count("at 40 steps") == 4 * 2  # running, then finished
    with sqlite3.connect(results / "index.sqlite") as con:
        steps = sorted(s for (s,) in con.execute(
            "SELECT value FROM metrics WHERE metric = 'train.steps' AND step IS NULL"))
    assert steps == [10.0] * 4 + [20.0] * 4 + [40.0] * 4
    from bench.report.suite_data import load_suite_data

    data = load_suite_data(results / "index.sqlite", "ladder")
    trained = data.finals[data.finals["metric"] == "train.steps"]
    assert set(trained["value"]) == {40.0} and len(trained) == 4  # the largest rung only
    assert main(["report", str(grown), "--results", str(results),
                 "--out", str(tmp_path / "reports")]) == 0
    html = (tmp_path / "reports" / "ladder.html").read_text()
    assert "trained on a ladder of budgets" in html
    capsys.readouterr()
    assert main(["status", str(grown), "--results", str(results)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert sorted((r[1], r[2], r[3], r[5]) for r in rows) == sorted(
        (v, s, str(b), "finished") for v in ("narrow", "wide") for s in ("0", "1")
        for b in (10, 20, 40))  # every rung by its budget


@pytest.mark.parametrize(("budget", "message"), [
    ("{steps: [20, 10]}", "in increasing order"),
    ("{steps: []}", "at least one amount"),
    ("{flops: [1.0e+9, -1]}", "budget.flops[1]: Input should be greater than 0"),
])
def test_a_malformed_ladder_is_refused_naming_its_line(tmp_path, capsys, budget, message):
    assert main(["validate", str(_suite(tmp_path, budget))]) == 2
    err = capsys.readouterr().err
    assert "ladder.yaml:4: budget" in err and message in err


def test_a_sweep_over_a_ladder_is_refused(tmp_path, capsys):
    path = _suite(tmp_path, "{steps: [10, 20]}")
    path.write_text(path.read_text() + "sweep:\n  trials: 2\n  objective: {metric: val.mse, "
                    "direction: minimize}\n  space:\n    optim.lr: {type: float, low: 0.01, "
                    "high: 0.1}\n")
    assert main(["validate", str(path)]) == 2
    assert "trains on a ladder of budgets" in capsys.readouterr().err
