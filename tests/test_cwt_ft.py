"""CWT pretraining then a fine-tuned untied head ("Headless + FT"): what a run records and saves,
and that it reproduces bit for bit across processes and across a SIGKILL during fine-tuning."""

import json
import os
from pathlib import Path

import pytest
import torch
from support.textgen import write_lm_data
from test_end_to_end import _bench, index_rows, kill_when, suite_file

from bench.cli import main
from bench.text.cwt import cwt_loss

# Wide enough that the CWT gather's backward writes over 32,768 values per micro-batch (1,008
# targets x 64), the size from which torch's CPU kernels split work between threads.
WIDE = """\
  wide_ft:
    objective: cwt
    head: finetune
    model: {preset: micro, hidden_size: 64, num_heads: 2}
    data: {seq_len: 64}
    train: {batch_size: 16}
    head_finetune: {optim: {lr: 3.0e-3, schedule: constant}}
    budget: {split: {pretrain: 0.3, head_finetune: 0.7}}"""
WIDE_FLOPS = 2e10
COMMON = ["--only", "wide_ft", "--seeds", "0", "--no-progress"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus and cloze set that test_end_to_end's suite file points at."""
    root = tmp_path_factory.mktemp("cwt-ft")
    write_lm_data(root / "data")
    return root


def comparable_metrics(results: Path) -> dict[str, float]:
    """A finished run's metrics without the timings, which no two runs share."""
    found = json.loads(next(results.glob("e2e-lm/*/metrics.json")).read_text())
    return {k: v for k, v in found.items() if "seconds" not in k and "_per_s" not in k}


def curve_losses(results: Path) -> list[str]:
    """The loss column of a run's curve.csv, as written."""
    lines = next(results.glob("e2e-lm/*/curve.csv")).read_text().splitlines()
    return [line.split(",")[4] for line in lines]


def test_cwt_gradients_repeat_bit_for_bit_with_threads():
    """Repeated targets add into the same embedding rows; the sum must not depend on which
    thread gets there first."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2048, 64, generator=gen)
    targets = torch.randint(0, 16, (2048,), generator=gen)  # heavy repeats
    table = torch.randn(16, 64, generator=gen)

    def grads() -> list[torch.Tensor]:
        h, e = hidden.clone().requires_grad_(True), table.clone().requires_grad_(True)
        cwt_loss(h, targets, e).backward()
        return [h.grad, e.grad]

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = grads()
        for _ in range(10):
            assert all(torch.equal(a, b) for a, b in zip(grads(), first, strict=True))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(workspace: Path) -> Path:
    """The folder of a finished tiny cwt_ft run, in which another writer's temporary folder
    `model.tmp` was in progress while the run saved its model."""
    from bench.config.plan import plan
    from bench.config.suite import load_suite

    suite, results = suite_file(workspace, "params.yaml", flops=2e8), workspace / "res-params"
    (run,) = plan(load_suite(suite), ["cwt_ft"], [0])
    planted = results / "e2e-lm" / run.run_id / "model.tmp"
    planted.mkdir(parents=True)
    (planted / "config.json").write_text("{}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_DATA", str(workspace / "cache"))
        assert main(["run", str(suite), "--results", str(results), "--only", "cwt_ft",
                     "--seeds", "0", "--no-progress"]) == 0
    return planted.parent


def test_records_the_parameters_of_the_saved_model(tiny_run):
    """model.*_params count the untied model that is fine-tuned and saved; model.pretrain.*
    the tied (headless) one that was pretrained."""
    from transformers import AutoModelForCausalLM

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    saved = AutoModelForCausalLM.from_pretrained(tiny_run / "model")
    embedding = saved.gpt_neox.embed_in.weight.numel()
    assert saved.lm_head.weight is not saved.gpt_neox.embed_in.weight
    assert metrics["model.total_params"] == sum(p.numel() for p in saved.parameters())
    assert metrics["model.head_params"] == embedding
    assert metrics["model.pretrain.total_params"] == metrics["model.total_params"] - embedding
    assert metrics["model.pretrain.head_params"] == 0
    assert metrics["model.non_embedding_params"] == metrics["model.pretrain.non_embedding_params"]


def test_saving_the_model_leaves_other_writers_alone(tiny_run):
    """The model is built under a temporary name of its own, then moved into place."""
    assert (tiny_run / "model.tmp" / "config.json").read_text() == "{}"
    assert (tiny_run / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in tiny_run.iterdir() if "model" in p.name) == ["model",
                                                                              "model.tmp"]


@pytest.fixture(scope="module")
def straight(workspace: Path) -> tuple[Path, Path, dict[str, str]]:
    """The suite file, an uninterrupted run's results, and the environment of both processes."""
    env = dict(os.environ, BENCH_DATA=str(workspace / "cache"), OMP_NUM_THREADS="2")
    suite = suite_file(workspace, "wide.yaml", flops=WIDE_FLOPS, checkpoint_every=5, extra=WIDE)
    results = workspace / "res-straight"
    proc = _bench("run", str(suite), "--results", str(results), *COMMON, env=env)
    assert proc.wait() == 0, proc.stderr.read()
    return suite, results, env


@pytest.mark.slow
def test_two_processes_give_identical_results(straight, workspace):
    suite, first, env = straight
    second = workspace / "res-second"
    proc = _bench("run", str(suite), "--results", str(second), *COMMON, env=env)
    assert proc.wait() == 0, proc.stderr.read()
    assert comparable_metrics(second) == comparable_metrics(first)
    assert curve_losses(second) == curve_losses(first)


@pytest.mark.slow
def test_sigkill_during_head_finetune_resumes_to_the_same_result(straight, workspace):
    suite, first, env = straight
    killed = workspace / "res-killed"
    proc = _bench("run", str(suite), "--results", str(killed), *COMMON, env=env)
    checkpoint = kill_when(proc, killed, "e2e-lm/*/checkpoints/head_finetune.pt")
    assert index_rows(killed, "SELECT state FROM runs") == [("running",)]
    assert (checkpoint.parent / "pretrain.final.pt").exists()

    proc = _bench("run", str(suite), "--results", str(killed), *COMMON, env=env)
    assert proc.wait() == 0, proc.stderr.read()
    log = next(killed.glob("e2e-lm/*/run.log")).read_text()
    assert "stage head_finetune: resuming at step" in log
    assert comparable_metrics(killed) == comparable_metrics(first)
    assert curve_losses(killed) == curve_losses(first)
