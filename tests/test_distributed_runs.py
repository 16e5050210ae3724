"""`bench run --nproc 2`: a suite's runs trained by two processes (gloo on CPUs) equal the
runs of one process, in every family, and a job killed mid-run resumes to the metrics of an
uninterrupted one."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.textgen import TINY_LM, write_lm_data
from test_tracking import scalars

from bench.store.folder import read_live_curve

SUITE = """\
extends: {base}
suite: ddp-lm
data: {{train: {data}/train.jsonl}}
train: {{micro_batch_size: 2, checkpoint_every: 6, validate_every: 6}}
objective: cwt
head: finetune
head_finetune: {{optim: {{lr: 3.0e-3, schedule: constant}}}}
budget: {{steps: 24, split: {{pretrain: 0.75, head_finetune: 0.25}}}}
evals:
  - lambada: {{path: {data}/cloze.jsonl, name: cloze_proxy, proxy: true, batch_size: 8}}
variants:
  cwt_ft: {{}}
"""

# Randomness in every step: dropout and NCE's sampled noise (encoder), random anchor sampling
# without OHEM (faces); evaluations left out, they run once on rank 0 either way.
ENCODER = """\
suite: ddp-encoder
family: encoder
seeds: [0]
budget: {{steps: 10}}
model: {{preset: bert-tiny, hidden_size: 32, num_heads: 2, intermediate_size: 64, context: 64}}
data: {{train: {data}/train.jsonl, seq_len: 32, tokenizer: {{train_bpe: 400}}}}
train: {{batch_size: 8, micro_batch_size: 2, optim: {{lr: 1.0e-3}}, validate_every: 5,
        checkpoint_every: 5, val_batches: 2}}
objective: nce
nce: {{negatives: 16}}
variants:
  nce: {{}}
"""
FACES = """\
suite: ddp-faces
family: faces
seeds: [0]
budget: {{images: 12}}
model: {{width: 0.125}}
data: {{root: {faces}, max_images: 8}}
train: {{batch_size: 4, short: 160, long_max: 240, ohem: false, checkpoint_every: 2}}
variants:
  headless: {{}}
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    write_lm_data(root / "data")
    (root / "suite.yaml").write_text(SUITE.format(base=TINY_LM, data=root / "data"))
    return root


def _bench(root: Path, results: str, *extra: str, suite: str = "suite.yaml"
           ) -> subprocess.Popen:
    env = dict(os.environ, BENCH_DATA=str(root / "cache"), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(root / suite), "--results",
         str(root / results), "--no-progress", "--device", "cpu", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group: the whole job can be killed at once


def _finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def _run_dir(root: Path, results: str, suite: str = "ddp-lm") -> Path:
    return next((root / results / suite).iterdir())


def _curve(run: Path) -> list[dict[str, str]]:
    with (run / "curve.csv").open() as f:
        return list(csv.DictReader(f))


def _metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def _assert_same_training(a: Path, b: Path) -> None:
    ca, cb = _curve(a), _curve(b)
    assert [(r["stage"], r["step"], r["flops"], r["tokens"]) for r in ca] == \
        [(r["stage"], r["step"], r["flops"], r["tokens"]) for r in cb]
    for x, y in zip(ca, cb, strict=True):
        for key in ("loss", "val_loss", "val_nll"):
            if x.get(key):
                assert float(y[key]) == pytest.approx(float(x[key]), rel=1e-4), (key, x["step"])
    ma, mb = _metrics(a), _metrics(b)
    for key in ("train.flops", "train.tokens", "train.images", "train.steps", "cwt.negatives"):
        assert ma.get(key) == mb.get(key), key
    for key in ("val.nll", "val.loss", "lambada.ppl"):
        if key in ma:
            assert mb[key] == pytest.approx(ma[key], rel=1e-3), key


@pytest.mark.slow
def test_two_processes_train_the_run_one_process_trains(workspace: Path) -> None:
    _finished(_bench(workspace, "one"))
    out = _finished(_bench(workspace, "two", "--nproc", "2", "--track", "tensorboard"))
    assert "starting 2 processes" in out
    one, two = _run_dir(workspace, "one"), _run_dir(workspace, "two")
    # rank 0 alone keeps the live curve and reports: one event file, each step once
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
    steps = [int(r["step"]) for r in _curve(two)]
    assert [s for s, _ in scalars(two / "tensorboard")["curve/loss"]] == steps
    assert [r["step"] for r in read_live_curve(two)] == steps
    assert one.name == two.name  # the same run: the process count is not part of its identity
    _assert_same_training(one, two)
    assert _metrics(two)["train.world_size"] == 2
    assert _metrics(two)["cwt.negatives"] == 2 * 31  # one process's micro-batch: 2 rows x 31
    assert (two / "run.rank1.log").is_file()  # rank 1 trains, logs, and writes nothing else
    assert json.loads((two / "provenance.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_killed_two_process_job_resumes_to_the_uninterrupted_metrics(workspace: Path) -> None:
    if not (workspace / "two").exists():
        _finished(_bench(workspace, "two", "--nproc", "2"))
    proc = _bench(workspace, "killed", "--nproc", "2")
    checkpoints = workspace / "killed" / "ddp-lm"
    while proc.poll() is None and not any(checkpoints.glob("*/checkpoints/pretrain.pt")):
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both training processes at once
    proc.wait()
    assert not (_run_dir(workspace, "killed") / "metrics.json").exists()
    _finished(_bench(workspace, "killed", "--nproc", "2"))
    _assert_same_training(_run_dir(workspace, "two"), _run_dir(workspace, "killed"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder", "faces"])
def test_two_processes_train_every_family_as_one(family: str, workspace: Path,
                                                 faces_root: Path) -> None:
    text = (ENCODER if family == "encoder" else FACES).format(data=workspace / "data",
                                                              faces=faces_root)
    (workspace / f"{family}.yaml").write_text(text)
    _finished(_bench(workspace, f"{family}-one", suite=f"{family}.yaml"))
    _finished(_bench(workspace, f"{family}-two", "--nproc", "2", suite=f"{family}.yaml"))
    one = _run_dir(workspace, f"{family}-one", f"ddp-{family}")
    two = _run_dir(workspace, f"{family}-two", f"ddp-{family}")
    _assert_same_training(one, two)
    losses = [row["loss"] for row in _curve(one)]
    assert len(losses) >= 3 and len(set(losses)) == len(losses)  # it trains
