"""Checkpoints: loaded without running code, damaged ones skipped for the previous one or
reported by name, stale temporaries of killed writers cleared."""

import logging
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.errors import RunFailed
from bench.schema import OptimConfig
from bench.training.budget import StageBudget
from bench.training.train import Stage, StageResult, train_stage
from bench.util.atomic import STALE_AFTER_S, build_dir, remove_stale_temporaries

STEPS = 12
EVERY = 4
LOG = logging.getLogger("test.checkpoints")


class Interrupted(Exception):
    """Stands for a kill between two steps."""


def make_stage(stop_at: int | None = None, warn_at: int | None = None) -> Stage:
    """A small regression whose loss draws on torch, numpy and Python randomness, so a resume
    that restored any generator wrongly would change the numbers. Killed at step `stop_at`;
    sent the cluster's warning (SIGUSR2) at step `warn_at`."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def micro_batches(step: int) -> list[torch.Tensor]:
        if step == stop_at:
            raise Interrupted
        if step == warn_at:
            os.kill(os.getpid(), signal.SIGUSR2)
        gen = torch.Generator().manual_seed(step)
        return [torch.randn(6, 4, generator=gen)]

    def loss(x: torch.Tensor) -> torch.Tensor:
        noise = float(np.random.normal()) + random.random()
        return ((model(x).squeeze(-1) - x.sum(-1) - noise) ** 2).mean()

    return Stage(name="toy", model=model, parameters=list(model.parameters()),
                 optim=OptimConfig(lr=1e-2, warmup=0.25), micro_batches=micro_batches,
                 loss=loss, items=len, validate=lambda steps: {"mean": np.float64(steps)},
                 validate_every=3, checkpoint_every=EVERY)


def train(ckpt: Path, stop_at: int | None = None, warn_at: int | None = None, **kw: object
          ) -> tuple[StageResult, Stage]:
    random.seed(1)
    np.random.seed(1)
    stage = make_stage(stop_at, warn_at)
    result = train_stage(stage, StageBudget("steps", STEPS), ckpt, torch.device("cpu"), LOG,
                         progress=False, **kw)
    return result, stage


def interrupted(ckpt: Path, at: int = 10) -> None:
    """Train until step `at`: checkpoints of steps 8 (`toy.pt`) and 4 (`toy.prev.pt`) remain."""
    with pytest.raises(Interrupted):
        train(ckpt, stop_at=at)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[StageResult, dict]:
    result, stage = train(tmp_path_factory.mktemp("straight"))
    return result, stage.model.state_dict()


def timeless(curve: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall"} for row in curve]


def same_as(straight: tuple[StageResult, dict], result: StageResult, stage: Stage) -> bool:
    """Same losses, learning rates, validations and final weights, bit for bit."""
    expected, weights = straight
    return timeless(result.curve) == timeless(expected.curve) and all(
        torch.equal(weights[k], v) for k, v in stage.model.state_dict().items())


def test_resume_is_bit_identical_and_needs_no_unpickling(tmp_path: Path, straight) -> None:
    interrupted(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"toy.pt", "toy.prev.pt"}
    for name in ("toy.pt", "toy.prev.pt"):
        torch.load(tmp_path / name, weights_only=True)  # tensors and plain data only
    result, stage = train(tmp_path)
    assert same_as(straight, result, stage)
    assert {p.name for p in tmp_path.iterdir()} == {"toy.final.pt"}
    torch.load(tmp_path / "toy.final.pt", weights_only=True)


def test_a_warned_stage_saves_at_its_next_read_then_lets_the_warning_act(
        tmp_path: Path, straight) -> None:
    """The cluster's warning (SIGUSR2 before a preemption or time limit) arrives during step 5:
    the stage trains on to its next read of the losses (step 6, a validation), saves a
    checkpoint there although checkpoints fall every 4 steps, and only then is the warning's
    handler (submitit's requeue) run; the resumed stage ends as an uninterrupted one."""
    seen: list[int] = []

    def requeue(signum: int, frame: object) -> None:  # what submitit's handler finds on disk
        seen.append(torch.load(tmp_path / "toy.pt", weights_only=True)["result"]["steps"])

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(SystemExit, match="stopped at step 6"):
            train(tmp_path, warn_at=4)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [6]
    result, stage = train(tmp_path)
    assert same_as(straight, result, stage)


def test_a_warning_at_the_last_steps_waits_for_the_stages_final_save(
        tmp_path: Path, straight, caplog: pytest.LogCaptureFixture) -> None:
    """Warned during the last step, past the last read where a stage could stop: the warning's
    handler runs only once the stage has saved itself finished, so the requeued job loses no
    step (it finds the stage trained)."""
    seen: list[list[str]] = []

    def requeue(signum: int, frame: object) -> None:  # what submitit's handler finds on disk
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with caplog.at_level(logging.INFO, logger=LOG.name):
            result, stage = train(tmp_path, warn_at=STEPS - 1)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [["toy.final.pt"]]
    assert "warned by the cluster, saved as finished" in caplog.text
    assert same_as(straight, result, stage)


class Planted:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["toy.pt", "toy.final.pt"])
def test_planted_checkpoint_is_refused_without_running_it(tmp_path: Path, name: str) -> None:
    ckpt, marker = tmp_path / "checkpoints", tmp_path / "ran"
    ckpt.mkdir()
    torch.save({"model": Planted(marker), "result": {}}, ckpt / name)
    with pytest.raises(RunFailed) as err:
        train(ckpt)
    assert not marker.exists()
    assert str(ckpt / name) in str(err.value)
    assert "objects other than tensors" in str(err.value)
    assert (ckpt / name).exists(), "kept for inspection until the user asks for a restart"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_damaged_checkpoint_falls_back_to_the_previous_one(
        tmp_path: Path, straight, caplog: pytest.LogCaptureFixture) -> None:
    interrupted(tmp_path)
    truncate(tmp_path / "toy.pt")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        result, stage = train(tmp_path)
    assert same_as(straight, result, stage)
    log = caplog.text
    assert f"checkpoint {tmp_path / 'toy.pt'} is unusable" in log
    assert f"falling back to the older checkpoint {tmp_path / 'toy.prev.pt'}" in log
    assert "resuming at step 4" in log


def test_no_usable_checkpoint_names_every_file_and_the_remedy(tmp_path: Path) -> None:
    interrupted(tmp_path)
    truncate(tmp_path / "toy.pt")
    (tmp_path / "toy.prev.pt").write_bytes(b"")
    for _ in range(2):  # a rerun fails the same way, still naming the files
        with pytest.raises(RunFailed) as err:
            train(tmp_path)
        message = str(err.value)
        assert str(tmp_path / "toy.pt") in message and str(tmp_path / "toy.prev.pt") in message
        assert "--restart-corrupt" in message


def test_restart_corrupt_discards_them_and_trains_from_the_start(
        tmp_path: Path, straight) -> None:
    interrupted(tmp_path)
    truncate(tmp_path / "toy.pt")
    truncate(tmp_path / "toy.prev.pt")
    result, stage = train(tmp_path, restart_corrupt=True)
    assert same_as(straight, result, stage)
    assert {p.name for p in tmp_path.iterdir()} == {"toy.final.pt"}


def test_damaged_final_checkpoint(tmp_path: Path, straight) -> None:
    train(tmp_path)
    truncate(tmp_path / "toy.final.pt")
    with pytest.raises(RunFailed, match=r"toy\.final\.pt.*--restart-corrupt"):
        train(tmp_path)
    result, stage = train(tmp_path, restart_corrupt=True)
    assert same_as(straight, result, stage)
    reloaded, stage = train(tmp_path)
    assert same_as(straight, reloaded, stage)


def test_checkpoint_of_another_model_is_unusable(tmp_path: Path) -> None:
    torch.save({"model": {"weight": torch.zeros(3)}, "result": {}}, tmp_path / "toy.final.pt")
    with pytest.raises(RunFailed, match="its weights do not match the model of stage toy"):
        train(tmp_path)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    stale_file = tmp_path / ".toy.pt.k3j_9xq2.tmp"
    fresh_file = tmp_path / ".toy.pt.a1b2c3d4.tmp"
    stale_dir = tmp_path / ".model.zz99yy88.tmp"
    busy_dir = tmp_path / ".data.qwer1234.tmp"
    others = [tmp_path / "toy.pt", tmp_path / "notes.tmp", tmp_path / ".toy.pt.short.tmp"]
    for path in [stale_file, fresh_file, *others]:
        path.write_text("x")
    for folder in (stale_dir, busy_dir):
        folder.mkdir()
        (folder / "part").write_text("x")
    for path in [stale_file, stale_dir, stale_dir / "part", busy_dir, *others]:
        age(path, STALE_AFTER_S + 60)

    removed = remove_stale_temporaries(tmp_path)

    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert fresh_file.exists() and busy_dir.exists(), "a live writer's work stays"
    assert all(p.exists() for p in others)
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_build_dir_temporaries_are_recognised(tmp_path: Path) -> None:
    seen: list[Path] = []
    build_dir(tmp_path / "out", lambda tmp: seen.append(tmp))
    assert remove_stale_temporaries(tmp_path, stale_after_s=0) == []  # nothing left behind
    seen[0].mkdir()  # as a kill would have left it
    assert remove_stale_temporaries(tmp_path, stale_after_s=0) == [seen[0]]


def test_training_clears_stale_temporaries_of_its_checkpoints(tmp_path: Path, straight) -> None:
    interrupted(tmp_path)
    leftover = tmp_path / ".toy.pt.abcd1234.tmp"
    leftover.write_bytes(b"half a checkpoint")
    age(leftover, STALE_AFTER_S + 1)
    result, stage = train(tmp_path)
    assert not leftover.exists()
    assert same_as(straight, result, stage)
