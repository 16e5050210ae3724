"""The whole pipeline on a scaled-down demo: run, store, skip, fail, SIGKILL and resume, report."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.textgen import TINY_LM, write_lm_data

from bench.cli import main

SUITE = """\
extends: {base}
suite: e2e-lm
seeds: [0, 1]
budget: {{flops: {flops}}}
data: {{train: {data}/train.jsonl}}
train: {{checkpoint_every: {checkpoint_every}}}
evals:
  - lambada: {{path: {data}/cloze.jsonl, name: cloze_proxy, proxy: true, batch_size: 8}}
variants:
  softmax: {{}}
  cwt: {{objective: cwt, head: embedding_transpose}}
  cwt_ft:
    objective: cwt
    head: finetune
    head_finetune: {{optim: {{lr: 3.0e-3, schedule: constant}}}}
    budget: {{split: {{pretrain: 0.8, head_finetune: 0.2}}}}
{extra}
report: {{baseline: softmax, metrics: [lambada.acc, lambada.ppl, val.nll]}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    write_lm_data(root / "data")
    return root


FLOPS = 4e8


def suite_file(root: Path, name: str, flops: float = FLOPS, checkpoint_every: int = 50,
               extra: str = "") -> Path:
    path = root / name
    path.write_text(SUITE.format(base=TINY_LM, flops=flops, data=root / "data",
                                 checkpoint_every=checkpoint_every, extra=extra))
    return path


@pytest.fixture(autouse=True)
def isolated_cache(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATA", str(workspace / "cache"))


def index_rows(results: Path, query: str) -> list[tuple]:
    with sqlite3.connect(results / "index.sqlite") as con:
        return con.execute(query).fetchall()


@pytest.mark.slow
def test_demo_suite_runs_skips_and_reports(workspace, capsys):
    suite, results = suite_file(workspace, "suite.yaml"), workspace / "results"
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    states = index_rows(results, "SELECT variant, seed, state FROM runs ORDER BY variant, seed")
    assert states == [(v, s, "finished") for v in ("cwt", "cwt_ft", "softmax") for s in (0, 1)]

    run_dir = next((results / "e2e-lm").iterdir())
    for name in ("config.json", "provenance.json", "metrics.json", "curve.csv", "run.log",
                 "samples_lambada.jsonl", "model/config.json", "model/tokenizer.json"):
        assert (run_dir / name).exists(), name
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert {"git_commit", "git_dirty", "packages", "device", "device_name", "host", "started",
            "ended"} <= set(prov)
    samples = (run_dir / "samples_lambada.jsonl").read_text().splitlines()
    assert len(samples) == 40

    # one FLOPs budget: every variant spends it, none overspends, the split is honoured
    spent = dict(index_rows(results, "SELECT variant, value FROM metrics "
                            "WHERE metric = 'train.flops' AND seed = 0"))
    assert all(0.75 * FLOPS < f <= FLOPS for f in spent.values()), spent
    ft = dict(index_rows(results, "SELECT metric, value FROM metrics WHERE variant = 'cwt_ft' "
                         "AND seed = 0 AND metric LIKE 'train.%.flops'"))
    assert ft["train.head_finetune.flops"] <= 0.2 * FLOPS < ft["train.head_finetune.flops"] * 1.5
    steps = dict(index_rows(results, "SELECT variant, value FROM metrics "
                            "WHERE metric = 'train.steps' AND seed = 0"))
    assert steps["cwt"] > steps["softmax"]  # no head to pay for: more steps for the same FLOPs
    curve = index_rows(results, "SELECT step, flops, value FROM metrics WHERE variant = 'cwt' "
                       "AND seed = 0 AND metric = 'curve.val_nll' ORDER BY step")
    assert len(curve) >= 3 and curve[-1][1] <= FLOPS

    # the CWT model keeps E^T as its head; the fine-tuned one has its own
    from transformers import AutoModelForCausalLM

    by_variant = dict(index_rows(results, "SELECT variant, path FROM runs WHERE seed = 0"))
    tied = AutoModelForCausalLM.from_pretrained(Path(by_variant["cwt"]) / "model")
    untied = AutoModelForCausalLM.from_pretrained(Path(by_variant["cwt_ft"]) / "model")
    assert tied.lm_head.weight.data_ptr() == tied.gpt_neox.embed_in.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.gpt_neox.embed_in.weight.data_ptr()

    # the saved model scores the same on its own, through `bench eval lambada`
    scored = workspace / "eval.json"
    assert main(["eval", "lambada", "--model", str(Path(by_variant["cwt"]) / "model"),
                 "--path", str(workspace / "data" / "cloze.jsonl"), "--name", "cloze_proxy",
                 "--batch-size", "8", "--json", str(scored)]) == 0
    standalone = json.loads(scored.read_text())["metrics"]
    stored = json.loads((Path(by_variant["cwt"]) / "metrics.json").read_text())
    assert standalone["acc"] == stored["lambada.acc"]
    assert standalone["ppl"] == pytest.approx(stored["lambada.ppl"], rel=1e-9)

    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6

    assert main(["ls", "--results", str(results)]) == 0
    assert capsys.readouterr().out.count("finished") == 6

    out = workspace / "reports"
    assert main(["report", str(suite), "--results", str(results), "--out", str(out)]) == 0
    html = (out / "e2e-lm.html").read_text()
    for variant in ("softmax", "cwt", "cwt_ft"):
        assert f">{variant}<" in html
    assert "<svg" in html and "PROXY" in html
    assert (out / "e2e-lm.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
def test_failed_run_is_recorded_and_the_suite_goes_on(workspace, capsys):
    """A run that fails once started (its corpus is there but is not JSON lines: only reading
    it tells) is recorded as failed, and the suite's other runs go on."""
    broken = workspace / "broken.jsonl"
    broken.write_text("not json lines\n")
    extra = f"  broken: {{data: {{train: {broken}}}}}"
    suite, results = suite_file(workspace, "failing.yaml", extra=extra), workspace / "res-fail"
    code = main(["run", str(suite), "--results", str(results), "--no-progress",
                 "--only", "softmax", "broken", "--seeds", "0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 of 2 runs failed" in err and "broken seed 0" in err
    assert str(broken) in err and "Traceback" not in err
    rows = dict(index_rows(results, "SELECT variant, state FROM runs"))
    assert rows == {"softmax": "finished", "broken": "failed"}
    reason = index_rows(results, "SELECT reason FROM runs WHERE variant = 'broken'")[0][0]
    assert str(broken) in reason


def _bench(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, folder: Path, pattern: str) -> Path:
    """SIGKILL `proc` as soon as a file matching `pattern` appears under `folder`; that file.
    The run is expected still to be going then (else the test's premise is wrong)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = next(folder.glob(pattern), None)
        if found is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} appeared under {folder} before the run ended")


@pytest.mark.slow
def test_sigkill_mid_training_resumes_to_the_same_metrics(workspace):
    env = dict(os.environ, BENCH_DATA=str(workspace / "cache"))
    suite = suite_file(workspace, "resume.yaml", flops=1.6e9, checkpoint_every=10)
    common = ["--only", "cwt_ft", "--seeds", "0", "--no-progress"]
    straight, killed = workspace / "res-straight", workspace / "res-killed"
    assert _bench("run", str(suite), "--results", str(straight), *common, env=env).wait() == 0

    proc = _bench("run", str(suite), "--results", str(killed), *common, env=env)
    kill_when(proc, killed, "e2e-lm/*/checkpoints/pretrain.pt")
    assert index_rows(killed, "SELECT state FROM runs") == [("running",)]

    assert _bench("run", str(suite), "--results", str(killed), *common, env=env).wait() == 0
    log = next(killed.glob("e2e-lm/*/run.log")).read_text()
    assert "resuming at step" in log

    def metrics(results: Path) -> dict[str, float]:
        found = json.loads(next(results.glob("e2e-lm/*/metrics.json")).read_text())
        return {k: v for k, v in found.items() if "seconds" not in k and "_per_s" not in k}

    assert metrics(killed) == metrics(straight)
    curves = [next(r.glob("e2e-lm/*/curve.csv")).read_text().splitlines() for r in
              (straight, killed)]
    losses = [[line.split(",")[4] for line in c] for c in curves]
    assert losses[0] == losses[1]
