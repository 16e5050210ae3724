"""Warmup-stable-decay schedules, and ladders whose lower rungs branch off the longest rung at
the end of their stable phase: same records and weights as rungs trained alone, fewer steps."""

import csv
import hashlib
import json
import logging
import math
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.cli import main
from bench.config.plan import plan
from bench.config.suite import load_suite
from bench.schema import OptimConfig
from bench.training import train
from bench.training.budget import StageBudget, lr_factor, shared_steps
from bench.training.checkpoints import Branches, branch_file
from bench.training.train import Stage, train_stage

LOG = logging.getLogger("test.wsd")
WSD = "{lr: 0.05, schedule: wsd, warmup: 3, decay: 0.25}"
LADDER = [2.0e4, 4.0e4, 8.0e4]


def test_wsd_warms_up_holds_then_cools_down_as_one_minus_sqrt():
    optim = OptimConfig(lr=1.0, schedule="wsd", warmup=5, decay=0.2, min_lr_ratio=0.1)
    horizon = 100
    assert lr_factor(optim, 2 / horizon, horizon) == pytest.approx(0.4)  # 2 of 5 warm-up steps
    assert lr_factor(optim, 5 / horizon, horizon) == 1.0
    assert lr_factor(optim, 0.5, horizon) == lr_factor(optim, 0.8, horizon) == 1.0
    assert lr_factor(optim, 0.9, horizon) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))
    assert lr_factor(optim, 1.0, horizon) == 0.1  # exactly the floor at the budget's end
    factors = [lr_factor(optim, (k + 1) / horizon, horizon) for k in range(horizon)]
    assert factors[79] == 1.0 and factors[80] < 1.0  # 80 stable-or-warm-up steps, then cooling
    assert all(a > b for a, b in pairwise(factors[79:]))
    fraction = OptimConfig(lr=1.0, schedule="wsd", warmup=0.1)
    assert lr_factor(fraction, 0.05, None) == pytest.approx(0.5)  # seconds: elapsed fraction
    assert lr_factor(fraction, 1.0, None) == 0.1


@pytest.mark.parametrize("horizon", [1, 2, 7, 10, 39, 78, 1001])
@pytest.mark.parametrize("decay", [0.2, 0.25, 0.35, 1.0])
def test_shared_steps_are_exactly_the_steps_any_longer_horizon_runs_alike(horizon, decay):
    optim = OptimConfig(lr=1.0, schedule="wsd", warmup=3, decay=decay)
    shared = shared_steps(optim, horizon)
    longer = 10 * horizon + 7
    own = [lr_factor(optim, (s + 1) / horizon, horizon) for s in range(horizon)]
    other = [lr_factor(optim, (s + 1) / longer, longer) for s in range(horizon)]
    assert own[:shared] == other[:shared]  # bit-identical rates
    assert shared == horizon - 1 or own[shared] != other[shared]
    if horizon >= 3:
        assert shared == min(max(math.floor((1 - decay) * horizon + 1e-9), 2), horizon - 1)


def test_shared_steps_need_a_warm_up_in_steps():
    assert shared_steps(OptimConfig(lr=1.0, schedule="wsd", warmup=0.1), 100) == 0
    assert shared_steps(OptimConfig(lr=1.0, schedule="wsd", warmup=200), 100) == 0
    assert shared_steps(OptimConfig(lr=1.0, schedule="cosine", warmup=3), 100) == 0
    assert shared_steps(OptimConfig(lr=1.0, schedule="wsd"), 100) == 80


def test_decay_is_part_of_wsd_configs_only():
    """Other schedules dump as before wsd existed, so their run ids stay what they were."""
    assert "decay" not in OptimConfig(lr=1.0).model_dump(mode="json")
    assert OptimConfig(lr=1.0, schedule="wsd").model_dump(mode="json")["decay"] == 0.2
    with pytest.raises(ValueError, match="only the wsd schedule has a cooldown fraction"):
        OptimConfig(lr=1.0, schedule="cosine", decay=0.3)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        OptimConfig(lr=1.0, schedule="wsd", decay=1.5)


# --- a ladder of the toy family, end to end -------------------------------------------------

def _suite(folder: Path, budget: str, optim: str = WSD) -> Path:
    path = folder / f"wsd-{hashlib.sha256((budget + optim).encode()).hexdigest()[:8]}.yaml"
    path.write_text(f"""suite: wsd
family: toy
seeds: [0]
budget: {budget}
optim: {optim}
evals: []
variants:
  base: {{}}
""")
    return path


def _run(suite: Path, results: Path) -> None:
    assert main(["run", str(suite), "--results", str(results), "--no-progress"]) == 0


def _weights(results: Path, run_id: str) -> dict[str, torch.Tensor]:
    path = results / "wsd" / run_id / "checkpoints" / "train.final.pt"
    return torch.load(path, weights_only=True)["model"]


def _record(results: Path, run_id: str) -> dict[str, Any]:
    folder = results / "wsd" / run_id
    return json.loads((folder / "metrics.json").read_text()) | {
        "provenance": json.loads((folder / "provenance.json").read_text()),
        "log": (folder / "run.log").read_text()}


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory, toy: None) -> Iterator[dict[str, Any]]:
    """The ladder trained once with branching (recording which steps this process trained),
    and each rung trained alone from scratch in another results folder."""
    folder = tmp_path_factory.mktemp("wsd")
    with pytest.MonkeyPatch.context() as mp:
        suite = _suite(folder, "{flops: [2.0e+4, 4.0e+4, 8.0e+4]}")
        runs = plan(load_suite(suite))
        trained: list[int] = []
        real = train._StepLoss.__call__

        def counting(self: Any, batch: Any, step: int, index: int, n_micro: int) -> Any:
            trained.append(step)
            return real(self, batch, step, index, n_micro)

        mp.setattr(train._StepLoss, "__call__", counting)
        _run(suite, folder / "branched")
        mp.setattr(train._StepLoss, "__call__", real)
        for amount in LADDER:
            _run(_suite(folder, f"{{flops: {amount:.1e}}}"), folder / "alone")
        yield {"folder": folder, "suite": suite, "runs": runs, "trained": trained}


def test_a_wsd_ladder_plans_its_longest_rung_first_with_unchanged_run_ids(ladder):
    runs = ladder["runs"]
    assert [r.variant.budget.flops for r in runs] == LADDER[::-1]
    longest, *lower = runs
    assert longest.branch_rungs == tuple(r.variant.budget for r in lower)
    assert all(r.branch_source == longest.run_id and not r.branch_rungs for r in lower)
    for run in runs:
        amount = f"{{flops: {run.variant.budget.flops:.1e}}}"
        alone, = plan(load_suite(_suite(ladder["folder"], amount)))
        assert alone.run_id == run.run_id and alone.branch_source is None


def test_branched_rungs_record_and_weigh_what_rungs_trained_alone_do(ladder):
    folder, runs = ladder["folder"], ladder["runs"]
    branched = {r.run_id: _record(folder / "branched", r.run_id) for r in runs}
    alone = {r.run_id: _record(folder / "alone", r.run_id) for r in runs}
    longest = branched[runs[0].run_id]
    cost = longest["train.flops"] / longest["train.steps"]  # measured FLOPs of one step
    optim = runs[0].config.optim
    expected_steps = []
    for run in runs:
        mine, theirs = branched[run.run_id], alone[run.run_id]
        horizon = math.floor(run.variant.budget.flops / cost)
        assert mine["train.steps"] == theirs["train.steps"] == horizon
        assert mine["train.flops"] == theirs["train.flops"] == horizon * cost
        assert mine["train.rows"] == theirs["train.rows"] == horizon * 16
        assert mine["val.mse"] == theirs["val.mse"]
        mine_w, theirs_w = _weights(folder / "branched", run.run_id), _weights(
            folder / "alone", run.run_id)
        assert all(torch.equal(mine_w[k], theirs_w[k]) for k in theirs_w)
        if run is runs[0]:
            assert "branched_from" not in mine["provenance"]
            expected_steps += list(range(horizon))
            continue
        k = shared_steps(optim, horizon)
        assert 0 < k < horizon
        assert mine["provenance"]["branched_from"] == {"run": runs[0].run_id, "step": k}
        assert f"branched from run {runs[0].run_id} at step {k}" in mine["log"]
        assert "branched_from" not in theirs["provenance"]
        expected_steps += list(range(k, horizon))  # the shared steps were not trained again
    assert ladder["trained"] == expected_steps


def test_curves_of_branched_rungs_are_the_rungs_trained_alone(ladder):
    """Step for step, the same losses, rates, FLOPs and rows (not the same seconds)."""
    folder = ladder["folder"]
    for run in ladder["runs"]:
        curves = []
        for results in ("branched", "alone"):
            with (folder / results / "wsd" / run.run_id / "curve.csv").open() as f:
                curves.append([{k: v for k, v in row.items() if k != "wall"}
                               for row in csv.DictReader(f)])
        steps = _record(folder / "alone", run.run_id)["train.steps"]
        assert len(curves[0]) == steps and curves[0] == curves[1]


def test_without_a_branch_file_a_rung_trains_its_shared_steps_itself(ladder, tmp_path):
    """The longest rung ran alone first (no ladder, so no branch files): the lower rungs find
    none, say so, and train from the start to the same weights."""
    folder, runs = ladder["folder"], ladder["runs"]
    _run(_suite(folder, f"{{flops: {LADDER[-1]:.1e}}}"), tmp_path)
    assert not (tmp_path / "wsd" / runs[0].run_id / "checkpoints" / "branches").exists()
    _run(ladder["suite"], tmp_path)
    for run in runs[1:]:
        record = _record(tmp_path, run.run_id)
        assert "no branch checkpoint" in record["log"]
        assert "branched_from" not in record["provenance"]
        mine, theirs = _weights(tmp_path, run.run_id), _weights(folder / "alone", run.run_id)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_fractional_warm_up_on_a_wsd_ladder_is_refused_naming_the_field(tmp_path, capsys,
                                                                          toy):
    optim = "{lr: 0.05, schedule: wsd, warmup: 0.1}"
    assert main(["validate", str(_suite(tmp_path, "{steps: 100}", optim))]) == 0
    capsys.readouterr()
    path = _suite(tmp_path, "{steps: [100, 200]}", optim)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path.name}:5: optim.warmup: a wsd schedule on a ladder of budgets shares its " \
           "warm-up between rungs: give it in steps (>= 1), not a fraction" in err


# --- the training loop: a branched stage killed and resumed ---------------------------------

class Interrupted(Exception):
    """Stands for a kill between two steps."""


def _stage(stop_at: int | None = None) -> Stage:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2),
                                torch.nn.Linear(8, 1))

    def micro_batches(step: int) -> list[torch.Tensor]:
        if step == stop_at:
            raise Interrupted
        return [torch.randn(6, 4, generator=torch.Generator().manual_seed(step))]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return ((model(x).squeeze(-1) - x.sum(-1)) ** 2).mean()

    optim = OptimConfig(lr=1e-2, schedule="wsd", warmup=2, decay=0.3)
    return Stage("toy", model, list(model.parameters()), optim, micro_batches, loss, items=len,
                 checkpoint_every=4)


def test_a_killed_branched_stage_resumes_from_its_own_checkpoints(tmp_path):
    short, long = StageBudget("steps", 20), StageBudget("steps", 40)
    alone = _stage()
    ref = train_stage(alone, short, tmp_path / "alone", torch.device("cpu"), LOG, False)
    source = branch_file(tmp_path / "long", "toy", short)
    train_stage(_stage(), long, tmp_path / "long", torch.device("cpu"), LOG, False,
                branches=Branches({source: short}))
    k = shared_steps(alone.optim, 20)
    assert k == 14 and torch.load(source, weights_only=True)["result"]["steps"] == k
    heard: list[dict[str, Any]] = []
    branches = Branches(source=("long-run", source), heard=heard.append)
    with pytest.raises(Interrupted):
        train_stage(_stage(stop_at=18), short, tmp_path / "short", torch.device("cpu"), LOG,
                    False, branches=branches)
    source.unlink()  # resuming needs only the stage's own checkpoint (step 16)
    resumed = _stage()
    result = train_stage(resumed, short, tmp_path / "short", torch.device("cpu"), LOG, False,
                         branches=branches)
    assert heard == [{"run": "long-run", "step": k}] * 2
    assert (result.steps, result.flops, result.items) == (ref.steps, ref.flops, ref.items)
    assert [(r["step"], r["loss"], r["lr"]) for r in result.curve] == [
        (r["step"], r["loss"], r["lr"]) for r in ref.curve]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 alone.model.state_dict().values(),
                                                 strict=True))
