"""A stage's checkpoint files without the training loop: where a stage starts (missing and
damaged files, a lower rung's branch file), when a save is due and what it writes, when the loop
reads its losses, and the branch files of a wsd ladder."""

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench.contract import BudgetConfig, RunSpec, Stage, StageResult, StepCost, Variant
from bench.errors import RunFailed
from bench.schema import OptimConfig
from bench.training.budget import StageBudget, shared_steps
from bench.training.checkpoints import (
    Branches,
    StageCheckpoints,
    branch_checkpoint,
    branch_file,
    drop_branch_file,
)
from bench.training.distributed import World
from bench.training.train import FLUSH_EVERY, _read_due
from bench.util.atomic import LinkRefused

LOG = logging.getLogger("test.stage_checkpoints")
CPU = torch.device("cpu")
COST = StepCost(100.0, 4)  # what one step of `stage()` is said to cost
WSD = OptimConfig(lr=0.1, schedule="wsd", warmup=2, decay=0.25)
TWELVE = StageBudget("steps", 12.0)


def stage(optim: OptimConfig = WSD, every: int = 4, seed: int = 0) -> Stage:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    return Stage("toy", model, list(model.parameters()), optim, lambda step: [], lambda b: b,
                 items=len, checkpoint_every=every)


def optimizer(of: Stage) -> torch.optim.Optimizer:
    return torch.optim.AdamW(of.parameters, lr=0.1)


def checkpoints(folder: Path, of: Stage, budget: StageBudget = TWELVE,
                **kw: Any) -> StageCheckpoints:
    return StageCheckpoints(of, budget, folder, CPU, kw.pop("here", World()), LOG, **kw)


def trained_to(result: StageResult, of: Stage, opt: torch.optim.Optimizer, steps: int) -> None:
    """The stage as the loop leaves it after `steps` steps: weights and optimiser moved, the
    record's counters and curve."""
    for _ in range(steps - result.steps):
        opt.zero_grad()
        of.model(torch.ones(2, 3)).sum().backward()
        opt.step()
        result.steps += 1
        result.flops += COST.flops
        result.items += COST.items
        result.curve.append({"step": result.steps, "flops": result.flops,
                             "tokens": result.items, "loss": 1.0 / result.steps})


def written(folder: Path, saves: list[int], final: int | None = None) -> dict[int, Any]:
    """Checkpoints saved by the writer after each of `saves` steps (and the final record after
    `final`); the weights it had at each."""
    of = stage()
    opt = optimizer(of)
    writer = checkpoints(folder, of)
    result, _ = writer.load(opt)
    weights = {}
    for steps in saves + ([final] if final is not None else []):
        trained_to(result, of, opt, steps)
        weights[steps] = {k: v.clone() for k, v in of.model.state_dict().items()}
        if steps == final:
            writer.finish(result)
        else:
            assert writer.due(result, COST)
            writer.save(result, last=False)
    return weights


def damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def started(folder: Path, **kw: Any) -> tuple[int, bool, Stage]:
    """(the step a new process starts at, whether the stage was already trained, its stage)."""
    of = stage(seed=1)  # other initial weights: a loaded checkpoint must replace them
    reader = checkpoints(folder, of, **kw)
    trained = reader.load_trained()
    if trained is not None:
        return trained.steps, True, of
    return reader.load(optimizer(of))[0].steps, False, of


# --- where a stage starts -------------------------------------------------------------------

@pytest.mark.parametrize(("saves", "final", "damaged", "start", "left"), [
    ([], None, [], 0, set()),
    ([4], None, [], 4, {"toy.pt"}),
    ([4, 8], None, [], 8, {"toy.pt", "toy.prev.pt"}),
    ([4, 8], None, ["toy.pt"], 4, {"toy.prev.pt"}),
    ([4, 8], 12, ["toy.final.pt"], 8, {"toy.pt", "toy.prev.pt"}),  # a kill before the cleanup
    ([4, 8], 12, [], 12, {"toy.final.pt"}),
])
def test_a_stage_starts_from_its_newest_usable_checkpoint(
        tmp_path: Path, saves: list[int], final: int | None, damaged: list[str], start: int,
        left: set[str], caplog: pytest.LogCaptureFixture) -> None:
    if final is not None:  # a kill between the final write and the removal of the others
        (tmp_path / "keep").mkdir()
        written(tmp_path / "keep", saves)
        weights = written(tmp_path, saves, final)
        for name in ("toy.pt", "toy.prev.pt"):
            (tmp_path / "keep" / name).rename(tmp_path / name)
    else:
        weights = written(tmp_path, saves)
    for name in damaged:
        damage(tmp_path / name)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        steps, trained, of = started(tmp_path)
    assert (steps, trained) == (start, start == 12)
    assert {p.name for p in tmp_path.glob("toy*.pt")} == left
    if start:
        assert all(torch.equal(of.model.state_dict()[k], v) for k, v in weights[start].items())
    for name in damaged:
        assert f"checkpoint {tmp_path / name} is unusable" in caplog.text
        assert "falling back to the older checkpoint" in caplog.text
    if start in (4, 8):
        assert f"resuming at step {start} from toy" in caplog.text


def test_a_resume_restores_the_optimiser_and_every_random_generator(tmp_path: Path) -> None:
    of = stage()
    opt = optimizer(of)
    writer = checkpoints(tmp_path, of)
    result, _ = writer.load(opt)
    trained_to(result, of, opt, 4)
    writer.due(result, COST)
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    writer.save(result, last=False)
    draws = (torch.rand(2), np.random.rand(), random.random())
    expected = opt.state_dict()

    of = stage(seed=1)
    opt = optimizer(of)
    torch.manual_seed(9)
    resumed, flops_by_shape = checkpoints(tmp_path, of).load(opt)
    assert torch.equal(torch.rand(2), draws[0])
    assert (np.random.rand(), random.random()) == draws[1:]
    assert resumed.curve == result.curve and flops_by_shape == {}
    assert all(torch.equal(opt.state_dict()["state"][0][k], v)
               for k, v in expected["state"][0].items())


def test_no_usable_checkpoint_fails_naming_each_file_unless_restarting(tmp_path: Path) -> None:
    written(tmp_path, [4, 8])
    damage(tmp_path / "toy.pt")
    (tmp_path / "toy.prev.pt").write_bytes(b"")
    with pytest.raises(RunFailed) as err:
        started(tmp_path)
    assert str(tmp_path / "toy.pt") in str(err.value)
    assert str(tmp_path / "toy.prev.pt") in str(err.value)
    assert "--restart-corrupt" in str(err.value)
    assert started(tmp_path, here=World(rank=1, size=2), restart_corrupt=True)[0] == 0
    assert {p.name for p in tmp_path.glob("*.pt")} == {"toy.pt", "toy.prev.pt"}, \
        "only rank 0 deletes"
    assert started(tmp_path, restart_corrupt=True)[0] == 0
    assert list(tmp_path.glob("*.pt")) == []


def test_a_fifo_in_place_of_a_checkpoint_is_unusable_not_waited_on(tmp_path: Path) -> None:
    written(tmp_path, [4, 8])
    (tmp_path / "toy.pt").unlink()
    os.mkfifo(tmp_path / "toy.pt")  # opening it for reading would wait for a writer
    assert started(tmp_path)[0] == 4  # the one before
    assert not (tmp_path / "toy.pt").exists()
    (tmp_path / "toy.prev.pt").unlink()
    os.mkfifo(tmp_path / "toy.prev.pt")
    with pytest.raises(RunFailed, match=r"toy\.prev\.pt: NotAFile: .* is a FIFO, not a regular"):
        started(tmp_path)


# --- a lower rung starting from a longer rung's branch file ---------------------------------

def branch_saved(folder: Path, lower: StageBudget) -> tuple[Path, int]:
    """The longest rung (40 steps) saves the branch file of the rung of `lower` (20 steps)
    where that rung's cooldown begins; (the file, that step)."""
    path = branch_file(folder / "long", "toy", lower)
    of = stage()
    opt = optimizer(of)
    writer = checkpoints(folder / "long", of, StageBudget("steps", 40.0),
                         branches=Branches({path: lower}))
    result, _ = writer.load(opt)
    result.horizon = 40
    at = shared_steps(WSD, 20)
    for steps in range(1, at + 1):
        trained_to(result, of, opt, steps)
        assert writer.due(result, COST) == (steps % 4 == 0 or steps == at)
        writer.save(result, last=False)
    return path, at


def test_a_lower_rung_starts_from_its_branch_file_and_its_saves_say_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    short = StageBudget("steps", 20.0)
    path, at = branch_saved(tmp_path, short)
    saved = torch.load(path, weights_only=True)
    assert (saved["budget"], saved["result"]["steps"], saved["result"]["horizon"]) == (
        ["steps", 20], at, 20)
    heard: list[dict[str, Any]] = []
    of = stage(seed=1)
    reader = checkpoints(tmp_path / "short", of, short,
                         branches=Branches(source=("long-run", path), heard=heard.append))
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert reader.load_trained() is None
        result, _ = reader.load(optimizer(of))
    assert (result.steps, result.horizon) == (at, 20)
    assert heard == [{"run": "long-run", "step": at}]
    assert f"branched from run long-run at step {at}" in caplog.text
    assert "resuming" not in caplog.text
    reader.finish(result)
    final = torch.load(tmp_path / "short" / "toy.final.pt", weights_only=True)
    assert final["branched"] == {"run": "long-run", "step": at}
    assert path.exists(), "the longer rung's file is left to it"


@pytest.mark.parametrize("wanted", [StageBudget("steps", 30.0), None])
def test_a_branch_file_for_another_budget_or_none_means_training_from_the_start(
        tmp_path: Path, wanted: StageBudget | None, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = branch_saved(tmp_path, StageBudget("steps", 20.0))
    if wanted is None:
        path.unlink()
    of = stage(seed=1)
    reader = checkpoints(tmp_path / "short", of, wanted or StageBudget("steps", 20.0),
                         branches=Branches(source=("long-run", path)))
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert reader.load(optimizer(of))[0].steps == 0
    said = ("no branch checkpoint" if wanted is None
            else "saved for a budget of ['steps', 20.0], not ['steps', 30.0]")
    assert said in caplog.text


def test_a_lower_rung_resumes_from_its_own_checkpoint_first(tmp_path: Path) -> None:
    short = StageBudget("steps", 20.0)
    path, at = branch_saved(tmp_path, short)
    heard: list[dict[str, Any]] = []
    branches = Branches(source=("long-run", path), heard=heard.append)
    of = stage()
    opt = optimizer(of)
    writer = checkpoints(tmp_path / "short", of, short, branches=branches)
    result, _ = writer.load(opt)
    trained_to(result, of, opt, 16)
    assert writer.due(result, COST)
    writer.save(result, last=False)
    path.unlink()  # its own checkpoint is all it needs
    assert started(tmp_path / "short", budget=short, branches=branches)[0] == 16
    assert heard == [{"run": "long-run", "step": at}] * 2


# --- when saves are due, what they write, and when the loop reads ---------------------------

def test_saves_every_checkpoint_every_steps_keep_the_one_before_and_finish_alone(
        tmp_path: Path) -> None:
    of = stage(every=3)
    opt = optimizer(of)
    writer = checkpoints(tmp_path, of, StageBudget("steps", 9.0))
    result, _ = writer.load(opt)
    saved_at = []
    for steps in range(1, 10):
        trained_to(result, of, opt, steps)
        if writer.due(result, COST):
            writer.save(result, last=steps == 9)
            saved_at.append(steps)
            names = {p.name for p in tmp_path.glob("*.pt")}
            kept = torch.load(tmp_path / "toy.pt", weights_only=True)["result"]["steps"]
            before = torch.load(tmp_path / "toy.prev.pt", weights_only=True)["result"][
                "steps"] if "toy.prev.pt" in names else None
            assert (kept, before) == ((3, None) if steps == 3 else (6, 3))
    assert saved_at == [3, 6, 9]  # the last step's checkpoint is the final one instead
    writer.finish(result)
    assert [p.name for p in tmp_path.glob("*.pt")] == ["toy.final.pt"]
    final = torch.load(tmp_path / "toy.final.pt", weights_only=True)
    assert set(final) == {"model", "result"} and final["result"]["steps"] == 9


def test_only_rank_0_writes(tmp_path: Path) -> None:
    path = branch_file(tmp_path, "toy", StageBudget("steps", 20.0))
    of = stage()
    writer = checkpoints(tmp_path, of, StageBudget("steps", 40.0), here=World(rank=1, size=2),
                         branches=Branches({path: StageBudget("steps", 20.0)}))
    result, _ = writer.load(optimizer(of))
    result.horizon = 40
    for steps in range(1, 21):
        result.steps = steps
        if writer.due(result, COST):
            writer.save(result, last=False)
    writer.finish(result)
    assert list(tmp_path.rglob("*.pt")) == []


def test_branch_steps_are_priced_on_the_stages_first_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After a resume the first step's cost comes from the curve, not the step just taken;
    a lower rung whose budget buys no step is said and skipped."""
    lower, tiny = StageBudget("flops", 2000.0), StageBudget("flops", 50.0)
    branches = Branches({branch_file(tmp_path, "toy", b): b for b in (lower, tiny)})
    writer = checkpoints(tmp_path, stage(every=100), StageBudget("flops", 4000.0),
                         branches=branches)
    result = StageResult("toy", steps=7, curve=[{"flops": 100.0, "tokens": 4}])
    at = shared_steps(WSD, 20)  # 2000 / 100 FLOPs per step
    with caplog.at_level(logging.INFO, logger=LOG.name):
        due = []
        for steps in range(8, 40):
            result.steps = steps
            due += [steps] * writer.due(result, StepCost(400.0, 4))
    assert due == [at]
    assert "no branch checkpoint for toy.flops-50.0.pt: a budget of 50 flops" in caplog.text


def test_losses_are_read_before_saves_and_validations_at_the_end_and_every_few_steps() -> None:
    of = stage(every=6)
    of.validate, of.validate_every = (lambda steps: {}), 4
    budget = StageBudget("steps", 25.0)
    result = StageResult("toy", horizon=25)
    read = []
    for steps in range(1, 26):
        result.steps = steps
        read += [steps] * _read_due(of, budget, result, saving=steps % of.checkpoint_every == 0)
    assert FLUSH_EVERY == 10
    assert read == [4, 6, 8, 10, 12, 16, 18, 20, 24, 25]
    timed = [StageResult("toy", steps=steps, seconds=steps / 10) for steps in range(1, 12)]
    assert all(_read_due(stage(every=50), StageBudget("seconds", 60.0), result, saving=False)
               for result in timed), "a seconds budget's meter is read after every step"


# --- the branch files of a wsd ladder -------------------------------------------------------

def rung(run_id: str, amount: float, source: str | None = None,
         lower: tuple[float, ...] = (), split: dict[str, float] | None = None) -> RunSpec:
    budget = BudgetConfig(steps=amount, split=split)
    return RunSpec("ladder", Variant("base", None, budget, [], {}), 0, run_id,
                   branch_source=source,
                   branch_rungs=tuple(BudgetConfig(steps=a, split=split) for a in lower))


def test_the_file_a_longest_rung_saves_is_the_one_its_lower_rung_reads(tmp_path: Path) -> None:
    split = {"pretrain": 0.75, "finetune": 0.25}
    budgets = {"pretrain": StageBudget("steps", 300.0), "finetune": StageBudget("steps", 100.0)}
    longest = rung("top", 400, lower=(100, 200), split=split)
    first = Stage("pretrain", nn.Linear(1, 1), [], WSD, lambda step: [], lambda b: b, len)
    branches = Branches.of_rung(longest, first, budgets, tmp_path / "top", print)
    assert branches is not None and branches.source is None and branches.heard is print
    folder = tmp_path / "top" / "checkpoints" / "branches"
    assert branches.saves == {folder / "pretrain.steps-75.0.pt": StageBudget("steps", 75.0),
                              folder / "pretrain.steps-150.0.pt": StageBudget("steps", 150.0)}
    lower = rung("low", 200, source="top", split=split)
    lower_budgets = {"pretrain": StageBudget("steps", 150.0),
                     "finetune": StageBudget("steps", 50.0)}
    theirs = Branches.of_rung(lower, first, lower_budgets, tmp_path / "low", print)
    assert theirs is not None and theirs.saves == {}
    assert theirs.source == ("top", folder / "pretrain.steps-150.0.pt")
    assert branch_checkpoint(lower, list(lower_budgets), tmp_path / "top") == theirs.source[1]


def test_no_branches_off_a_wsd_schedule_or_on_a_seconds_budget(tmp_path: Path) -> None:
    longest = rung("top", 400, lower=(100,))
    steps, seconds = {"toy": StageBudget("steps", 400.0)}, {"toy": StageBudget("seconds", 9.0)}
    assert Branches.of_rung(longest, stage(OptimConfig(lr=0.1)), steps, tmp_path, print) is None
    assert Branches.of_rung(longest, stage(), seconds, tmp_path, print) is None
    assert Branches.of_rung(longest, stage(), steps, tmp_path, print) is not None


def test_a_link_on_the_way_to_a_branch_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "top").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LinkRefused):
        Branches.of_rung(rung("low", 100, source="top"), stage(),
                         {"toy": StageBudget("steps", 100.0)}, tmp_path / "low", print)


def test_a_finished_lower_rung_drops_the_branch_file_it_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lower = rung("low", 100, source="top")
    path = branch_checkpoint(lower, ["toy"], tmp_path / "top")
    other = branch_file(tmp_path / "top" / "checkpoints", "toy", StageBudget("steps", 50.0))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    other.write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        drop_branch_file(lower, ["toy"], tmp_path / "low", LOG)
        drop_branch_file(lower, ["toy"], tmp_path / "low", LOG)  # gone: nothing to say
        drop_branch_file(rung("top", 200, lower=(100,)), ["toy"], tmp_path / "top", LOG)
    assert not path.exists() and other.exists()
    assert caplog.messages == [f"removed the branch checkpoint {path}, used by this run alone"]
