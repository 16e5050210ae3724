"""Missing data stops a suite before any run starts: `bench plan` marks a missing input as an
error (exit 2, or a warning with --allow-missing); `bench run`, inline or as jobs, checks every
variant's inputs and asks each evaluator to check its data before anything is claimed, trained
or submitted, and names every problem at once."""

from pathlib import Path

import pytest

from bench.cli import main


def _suite(tmp_path: Path, train: Path, cloze: Path, glue: Path | None = None) -> Path:
    glue_eval = f"\n  - glue: {{path: {glue}, tasks: [sst2]}}" if glue is not None else ""
    path = tmp_path / "pf.yaml"
    path.write_text(f"""suite: pf
family: {"encoder" if glue is not None else "lm"}
seeds: [0, 1]
budget: {{steps: 2}}
model: {{preset: {"bert-tiny" if glue is not None else "micro"}}}
data: {{train: {train}, seq_len: 16, tokenizer: {{train_bpe: 300}}}}
train: {{batch_size: 4, optim: {{lr: 1.0e-3}}}}
objective: softmax
evals:{glue_eval if glue is not None else f'''
  - lambada: {{path: {cloze}, proxy: true}}'''}
variants:
  a: {{}}
  b: {{train: {{batch_size: 8}}}}
""")
    return path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A suite whose training text is not there and whose cloze file is not LAMBADA."""
    cloze = tmp_path / "cloze.jsonl"
    cloze.write_text('{"text": "one passage"}\nnot json\n')
    return _suite(tmp_path, tmp_path / "nowhere.jsonl", cloze)


def test_plan_marks_a_missing_input_as_an_error_unless_allowed(broken, tmp_path, capsys):
    assert main(["plan", str(broken)]) == 2
    out, err = capsys.readouterr()
    assert "2 runs" not in out and "4 runs" in out  # the plan is still printed
    assert f"error: input data.train: {tmp_path / 'nowhere.jsonl'} not found (variants a, b)" \
        in err.splitlines()
    assert main(["plan", str(broken), "--allow-missing"]) == 0
    assert f"warning: input data.train: {tmp_path / 'nowhere.jsonl'} not found" in \
        capsys.readouterr().err


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_run_names_every_problem_and_starts_nothing(broken, tmp_path, capsys, executor):
    results = tmp_path / "results"
    assert main(["run", str(broken), "--results", str(results), "--executor", executor,
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems before any run starts; nothing was run or "
                          "submitted:\n")
    lines = err.splitlines()[1:]
    assert lines == [
        f"  input data.train: {tmp_path / 'nowhere.jsonl'} not found (variants a, b)",
        f"  lambada: {tmp_path / 'cloze.jsonl'}:2: not JSON (Expecting value); expected "
        'LAMBADA JSON lines {"text": ...} (variants a, b)']
    assert not results.exists()  # no claim, no run folder, no job record


def test_an_evaluator_whose_own_input_is_missing_is_named_by_that_input(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "some text"}\n')
    suite = _suite(tmp_path, train, tmp_path / "unused", glue=tmp_path / "no-glue")
    assert main(["run", str(suite), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == [
        f"  input evals.glue.path: {tmp_path / 'no-glue'} not found (variants a, b)"]


def test_a_sweep_with_missing_data_stops_before_its_study_opens(tmp_path, capsys, monkeypatch):
    from support.textgen import TINY_LM

    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    suite = tmp_path / "sweep.yaml"
    suite.write_text(f"""extends: {TINY_LM}
suite: pf-sweep
budget: {{steps: 2}}
data: {{train: {tmp_path / 'nowhere.jsonl'}}}
variants:
  a: {{}}
sweep:
  trials: 2
  objective: {{metric: val.nll, direction: minimize}}
  space:
    train.optim.lr: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
""")
    results = tmp_path / "results"
    assert main(["sweep", str(suite), "--results", str(results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"input data.train: {tmp_path / 'nowhere.jsonl'} not found (variant a)" in err
    assert not results.exists()  # no study, no trial
