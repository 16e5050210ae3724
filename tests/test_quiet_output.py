"""What reaches stderr: plain progress lines outside a terminal, a bar inside one, nothing from
lm-eval or git."""

import io
import logging
import sys
from pathlib import Path

import pytest
import torch
from support.textgen import narrative_passages, write_jsonl, write_lm_data
from test_lambada_eval import tiny_lm  # noqa: F401 (a fixture, used by name)
from torch import nn

from bench.errors import UserError
from bench.evals.lambada import HFScorer, LambadaEvalConfig, evaluate_lambada
from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.train import Stage, train_stage
from bench.util.progress import INTERVAL_ENV, progress

STEPS = 40


def short_stage(tmp_path: Path) -> None:
    """A 40-step stage with progress shown, on whatever sys.stderr is."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    stage = Stage(name="toy", model=model, parameters=list(model.parameters()),
                  optim=OptimConfig(lr=1e-2), micro_batches=lambda step: [torch.ones(2, 3)],
                  loss=lambda x: model(x).pow(2).mean(), items=len)
    train_stage(stage, StageBudget("steps", STEPS), tmp_path, torch.device("cpu"),
                logging.getLogger("test.quiet"), progress=True)


def test_training_outside_a_terminal_prints_few_plain_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    short_stage(tmp_path / "a")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert len(err.splitlines()) <= 1, "at most one line per 30 s"


def test_interval_zero_prints_a_line_per_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0")
    short_stage(tmp_path)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == STEPS
    assert lines[-1].startswith(f"train toy: {STEPS}/{STEPS} steps (100%), ")
    assert lines[0].startswith("train toy: 1/40 steps (2%), ") and ", ETA " in lines[0]
    assert "loss=" in lines[-1] and "lr=" in lines[-1]


def test_bad_interval_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    with pytest.raises(UserError, match=f"{INTERVAL_ENV}='soon': expected a number"):
        progress("x", "step", stream=io.StringIO())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_keeps_the_live_bar() -> None:
    stream = Terminal()
    bar = progress("train toy", "step", stream=stream)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in stream.getvalue()


def test_lambada_evaluation_prints_nothing(
        tmp_path: Path, tiny_lm, capfd: pytest.CaptureFixture[str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny_lm
    monkeypatch.chdir(tmp_path)  # not a git checkout: lm-eval's `git describe` complains
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    data = write_jsonl(tmp_path / "mini.jsonl", narrative_passages(6, seed=0))
    cfg = LambadaEvalConfig(path=str(data), name="lambada_quiet", batch_size=4)
    result = evaluate_lambada(HFScorer(model, tokenizer, "cpu"), cfg, workdir=tmp_path / "work")
    assert result.n == 6
    print("after", file=sys.stderr)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == "after\n", "lm-eval's bars, warnings and git's stderr are discarded"


@pytest.mark.slow
def test_bench_run_into_a_file_writes_no_bars(tmp_path):
    """`bench run > log 2>&1`: plain lines only, no carriage returns from any library's bar."""
    import os
    import subprocess

    from test_end_to_end import suite_file

    write_lm_data(tmp_path / "data", n_train=300, n_cloze=20)
    suite = suite_file(tmp_path, "suite.yaml", flops=2e8)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env |= {"BENCH_DATA": str(tmp_path / "cache"), INTERVAL_ENV: "0"}
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "--results",
                          str(tmp_path / "results"), "--only", "cwt_ft", "--seeds", "0"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout
    assert "\r" not in out.stdout
    assert "train pretrain:" in out.stdout and "train head_finetune:" in out.stdout
    assert "Writing model shards" not in out.stdout and "Traceback" not in out.stdout


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path):
    """`bench status SUITE | head -1`: the pipe closes under the listing."""
    import os
    import shutil
    import subprocess

    fixture = Path(__file__).with_name("legacy_store")
    shutil.copytree(fixture / "results", tmp_path / "results")
    many = tmp_path / "many.yaml"  # enough rows to fill the pipe's buffer
    many.write_text((fixture / "suite.yaml").read_text().replace(
        "seeds: [0]", f"seeds: {list(range(2000))}"))
    env = dict(os.environ, LEGACY_DATA=str(fixture / "data"), BENCH_DATA=str(tmp_path / "c"))
    bench = subprocess.Popen([sys.executable, "-m", "bench", "status", str(many), "--results",
                              str(tmp_path / "results")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    assert bench.stdout is not None and bench.stderr is not None
    bench.stdout.readline()
    bench.stdout.close()
    err = bench.stderr.read().decode()
    assert bench.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_version_names_the_package_and_the_commit_without_importing_torch(tmp_path):
    """`bench --version`: the installed version and the checkout's commit, read by git itself;
    answered without torch, so at once."""
    import subprocess
    from importlib.metadata import version

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    probe = ("import sys; from bench.cli import main\n"
             "try:\n    main(['--version'])\nexcept SystemExit as e:\n    code = e.code\n"
             "print('torch' in sys.modules, code)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    line, imported = done.stdout.splitlines()
    assert line.startswith(f"headless-bench {version('headless-bench')} (git {head}")
    assert imported == "False 0", done.stderr
