"""One run trained by several processes (gloo on CPUs): the same curve as one process."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bench.lm.config import LMConfig

from bench.cli import _without_option
from bench.errors import ClaimRefused, UserError
from bench.training.distributed import World, local_part

SCRIPT = Path(__file__).with_name("support") / "ddp_stage.py"


def _stage(out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone",
                                      f"--nproc-per-node={nproc}"]
    return subprocess.run([sys.executable, *launcher, str(SCRIPT), str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def _curve(out: Path) -> dict:
    return json.loads((out / "curve.json").read_text())


def _assert_same_curve(a: dict, b: dict) -> None:
    assert [r["step"] for r in a["curve"]] == [r["step"] for r in b["curve"]]
    for x, y in zip(a["curve"], b["curve"], strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
        assert ("val_w" in x) == ("val_w" in y)
        assert y.get("val_w", 0) == pytest.approx(x.get("val_w", 0), rel=1e-5, abs=1e-6)
        assert (y["flops"], y["tokens"]) == (x["flops"], x["tokens"])


@pytest.mark.slow
def test_two_processes_follow_the_curve_of_one(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert _stage(one, 1).returncode == 0
    done = _stage(two, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _curve(one), _curve(two)
    _assert_same_curve(a, b)
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["flops"] == b["flops"] and a["items"] == b["items"] == 17 * 8  # all ranks' work
    assert len({round(r["loss"], 4) for r in a["curve"]}) > 10  # it trains: the loss moves


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_processes(tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _stage(whole, 1).returncode == 0
    assert _stage(split, 2, "--fail-at", "10").returncode != 0  # checkpointed at step 8
    assert (split / "checkpoints" / "fit.pt").is_file()
    done = _stage(split, 1)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_curve(_curve(whole), _curve(split))


def test_local_part_splits_evenly_or_says_why() -> None:
    assert local_part(8, current=World(1, 2)) == slice(4, 8)
    assert local_part(12, current=World(2, 3), micro=2) == slice(8, 12)
    with pytest.raises(UserError, match=r"train.batch_size 10 does not split into 4 equal"):
        local_part(10, current=World(0, 4))
    with pytest.raises(UserError, match="whole micro-batches of 4; use a multiple of 8"):
        local_part(12, current=World(0, 2), micro=4)


def test_a_process_count_below_one_is_refused(capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    assert main(["run", "no-such-suite.yaml", "--nproc", "0"]) == 2
    assert "--nproc 0: expected at least 1 process" in capsys.readouterr().err


def test_nproc_is_dropped_from_the_command_torchrun_starts() -> None:
    argv = ["run", "s.yaml", "--nproc", "2", "--device", "cpu", "--nproc=4"]
    assert _without_option(argv, "--nproc") == ["run", "s.yaml", "--device", "cpu"]


def test_a_refused_claim_crosses_processes_whole() -> None:
    sent = pickle.loads(pickle.dumps(ClaimRefused("abc", "running", "running in process 7")))
    assert (sent.run_id, sent.state, sent.status) == ("abc", "running", "running in process 7")


def _lm_config(micro: int | None, objective: str = "cwt") -> "LMConfig":
    from bench.lm.config import LMConfig

    return LMConfig.model_validate({
        "model": {"preset": "micro"}, "objective": objective,
        **({"head": "embedding_transpose"} if objective == "cwt" else {}),
        "data": {"train": "unused.jsonl", "seq_len": 32, "tokenizer": {"train_bpe": 300}},
        "train": {"batch_size": 8, "micro_batch_size": micro, "optim": {"lr": 1e-3}}})


def test_a_plan_prices_steps_as_they_run_on_several_processes() -> None:
    """A micro-batch of 4 rows costs what it costs on any number of processes: CWT's K x K
    scores are a micro-batch's, so 4-row micro-batches cost less than the whole batch at once;
    the softmax head's cost does not depend on how the batch is cut."""
    from bench.lm.family import FAMILY

    def pretrain(cfg: "LMConfig", processes: int) -> float:
        return FAMILY.step_costs(cfg, processes)["pretrain"].flops

    assert pretrain(_lm_config(4), 2) == pretrain(_lm_config(4), 1) < pretrain(
        _lm_config(None), 1)
    assert pretrain(_lm_config(4, "softmax"), 2) == pretrain(_lm_config(None, "softmax"), 1)
    with pytest.raises(UserError, match=r"train\.batch_size 8 does not split into 3 equal"):
        pretrain(_lm_config(1), 3)


@pytest.mark.parametrize("objective", ["cwt", "softmax"])
def test_an_unset_micro_batch_on_several_processes_is_refused(objective: str) -> None:
    """Unset, a process's share would be its micro-batch: K and every micro-batch's random
    draws would change with the number of processes under one run id."""
    from bench.lm.family import FAMILY

    with pytest.raises(UserError, match=r"train\.micro_batch_size is unset, so each of 2 "
                       r"processes would run its share of the batch \(4 rows\) at once"):
        FAMILY.step_costs(_lm_config(None, objective), 2)


def _lm_suite(tmp_path: Path, batch: int = 8, micro: int | None = None,
              objective: str = "cwt") -> Path:
    """A one-run LM suite training `batch` rows a step, in micro-batches of `micro` (unset by
    default)."""
    suite = tmp_path / "suite.yaml"
    micro_batch = "" if micro is None else f"micro_batch_size: {micro}, "
    head = "head: embedding_transpose\n" if objective == "cwt" else ""
    suite.write_text(
        "suite: worlds\nfamily: lm\nseeds: [0]\nbudget: {steps: 2}\nmodel: {preset: micro}\n"
        f"data: {{train: {tmp_path}/train.jsonl, seq_len: 16, tokenizer: {{train_bpe: 300}}}}\n"
        f"train: {{batch_size: {batch}, {micro_batch}optim: {{lr: 1.0e-3}}}}\n"
        f"objective: {objective}\n{head}variants: {{a: {{}}}}\n")
    return suite


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_refuse_a_world_size_that_would_change_the_run(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    suite = _lm_suite(tmp_path)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    extra = ["--results", str(tmp_path / "r")] if command == "run" else []
    assert main([command, str(suite), "--nproc", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert "train.micro_batch_size is unset, so each of 2 processes" in err
    assert "set train.micro_batch_size" in err and "Traceback" not in err
    if command == "run":
        assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_a_set_micro_batch_plans_the_same_runs_on_any_number_of_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """With the micro-batch in the config, 1 and 2 processes train the same run: same id, same
    step cost (a run may resume with another number of processes)."""
    from bench.cli import main

    suite = _lm_suite(tmp_path, micro=4)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    plans = []
    for nproc in ("1", "2"):
        assert main(["plan", str(suite), "--nproc", nproc, "--allow-missing"]) == 0
        out = capsys.readouterr().out
        plans.append(out.rsplit("-\n", 1)[-1].split())  # the runs: id, variant, ..., cost
    assert plans[0] == plans[1] and len(plans[0][0]) == 12


def test_a_batch_that_does_not_split_is_refused_before_any_process_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    suite = _lm_suite(tmp_path, batch=6, micro=2, objective="softmax")
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "cache"))
    assert main(["run", str(suite), "--nproc", "2", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size 6 does not split into 2 equal shares of whole micro-batches" in err
    assert not (tmp_path / "r").exists()  # nothing started, nothing written
