"""Budgets: exact FLOP counts, stopping within one step, schedules that end at the budget."""

import logging
import math
from dataclasses import replace
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.contract import BudgetConfig, Stage, StageResult, StepCost
from bench.errors import RunFailed, UserError
from bench.schema import OptimConfig
from bench.training.budget import StageBudget, lr_factor, split_budget
from bench.training.flops import count_flops, count_flops_abstract
from bench.training.train import train_stage

LOG = logging.getLogger("test")
N, A, B, C = 8, 12, 20, 6


def stack() -> nn.Module:
    return nn.Sequential(nn.Linear(A, B), nn.ReLU(), nn.Linear(B, C))


def test_linear_stack_flops_are_exact():
    torch.manual_seed(0)
    model, x = stack(), torch.randn(N, A)
    flops = count_flops(lambda: model(x).sum().backward())
    forward = 2 * N * (A * B + B * C)
    backward = 2 * N * B * C * 2 + 2 * N * A * B  # layer 2: input and weight grads; layer 1: weight
    assert flops == forward + backward


def test_abstract_count_equals_real_count_for_a_transformer():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    real_model = GPTNeoXForCausalLM(cfg)
    ids = torch.randint(0, 300, (3, 16))
    real = count_flops(lambda: real_model(ids, labels=ids).loss.backward())

    def fake_step() -> None:
        model = GPTNeoXForCausalLM(cfg)
        fake_ids = torch.zeros((3, 16), dtype=torch.long)
        model(fake_ids, labels=fake_ids).loss.backward()

    assert count_flops_abstract(fake_step) == real
    # the CPU attention kernel is counted, with the formulas torch uses for the GPU kernels
    with FlopCounterMode(display=False) as counter:
        real_model(ids, labels=ids).loss.backward()
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    heads, head_dim = 2, 16
    one_pass = 2 * (2 * 3 * heads * 16 * 16 * head_dim)  # scores and weighted sum, per layer
    assert by_op["aten._scaled_dot_product_flash_attention_for_cpu"] == 2 * one_pass
    backward = by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"]
    assert backward == 2 * one_pass * 5 // 2  # recomputed scores plus four gradient products


def test_horizon_floor_and_split():
    cost = StepCost(flops=1000.0, items=64)
    assert StageBudget("flops", 10_999).horizon(cost) == 10
    assert StageBudget("tokens", 640).horizon(cost) == 10
    assert StageBudget("steps", 7).horizon(cost) == 7
    assert StageBudget("seconds", 5).horizon(cost) is None
    with pytest.raises(UserError, match="does not buy one step"):
        StageBudget("flops", 999).horizon(cost)
    budget = BudgetConfig(flops=100.0, split={"pretrain": 0.75, "head_finetune": 0.25})
    shares = split_budget(budget, ["pretrain", "head_finetune"])
    assert shares["pretrain"].amount == 75.0 and shares["head_finetune"].amount == 25.0


@pytest.mark.parametrize("schedule,final", [("cosine", 0.1), ("linear", 0.1), ("constant", 1.0)])
def test_schedule_ends_at_final_rate(schedule, final):
    optim = OptimConfig(lr=1.0, schedule=schedule, warmup=0.1, min_lr_ratio=0.1)
    horizon = 50
    factors = [lr_factor(optim, (k + 1) / horizon, horizon) for k in range(horizon)]
    assert factors[0] == pytest.approx(0.2)  # (1/50) / 0.1
    assert factors[4] == pytest.approx(1.0)  # warm-up ends after 10% of the steps
    assert factors[-1] == pytest.approx(final)
    if schedule != "constant":
        assert all(a >= b for a, b in pairwise(factors[4:]))


def test_warmup_in_steps_and_step_schedule():
    optim = OptimConfig(lr=1.0, schedule="step", warmup=5, milestones=(0.5, 0.8), gamma=0.1)
    assert lr_factor(optim, 3 / 100, 100) == pytest.approx(0.6)
    assert lr_factor(optim, 0.6, 100) == pytest.approx(0.1)
    assert lr_factor(optim, 1.0, 100) == pytest.approx(0.01)
    with pytest.raises(UserError, match="warmup in steps"):
        lr_factor(optim, 0.5, None)


def regression_stage(model: nn.Module, checkpoint_every: int = 1000, fail_at: int | None = None,
                     poison: bool = False) -> Stage:
    """A real training stage: a linear stack regressing a fixed target, batches by step index."""
    def batches(step: int) -> list[torch.Tensor]:
        if fail_at is not None and step == fail_at:
            raise KeyboardInterrupt  # the process dies here
        g = torch.Generator().manual_seed(step)
        x = torch.randn(N, A, generator=g)
        return [x * math.nan] if poison and step == 2 else [x]

    return Stage(
        name="fit", model=model, parameters=list(model.parameters()),
        optim=OptimConfig(lr=0.05, warmup=0.2, schedule="cosine"),
        micro_batches=batches, loss=lambda x: (model(x) - 1.0).pow(2).mean(),
        items=lambda x: x.shape[0], checkpoint_every=checkpoint_every,
        validate=lambda _steps: {"loss": float((model(torch.ones(2, A)) - 1.0).pow(2).mean())},
        validate_every=4)


def test_flops_budget_stops_within_one_step(tmp_path):
    torch.manual_seed(0)
    model = stack()
    step_flops = count_flops(lambda: model(torch.randn(N, A)).sum().backward())
    budget = StageBudget("flops", 10.5 * step_flops)
    result = train_stage(regression_stage(model), budget, tmp_path, torch.device("cpu"), LOG,
                         progress=False)
    assert result.steps == 10 and result.horizon == 10
    assert result.flops <= budget.amount < result.flops + step_flops
    assert result.items == 10 * N
    lrs = [r["lr"] for r in result.curve]
    assert lrs[-1] == pytest.approx(0.05 * 0.1)  # the schedule's final rate at the budget's end
    assert [r["step"] for r in result.curve if "val_loss" in r] == [4, 8, 10]
    assert result.curve[-1]["loss"] < result.curve[0]["loss"]


def test_a_flops_budget_spent_before_the_horizon_keeps_every_step_in_the_curve(tmp_path):
    """Steps that grow (padded images) end the budget before the horizon priced on the first
    step; the steps since the last read of the losses are still recorded."""
    torch.manual_seed(0)
    model = stack()
    stage = regression_stage(model)
    stage.micro_batches = lambda k: [torch.randn(N * (1 + min(k, 1)), A)]  # twice as big
    stage.validate = None
    step_flops = count_flops(lambda: model(torch.randn(N, A)).sum().backward())
    result = train_stage(stage, StageBudget("flops", 12.5 * step_flops), tmp_path,
                         torch.device("cpu"), LOG, progress=False)
    assert result.horizon == 12 and result.steps == 7  # 1 + 2 x 6 step costs
    assert [r["step"] for r in result.curve] == list(range(1, 8))
    assert result.curve[-1]["flops"] == result.flops and math.isfinite(result.final_loss)


def test_a_stage_stops_when_its_steps_are_taken_or_its_meter_runs_out():
    steps, flops, seconds = (StageBudget("steps", 5.0), StageBudget("flops", 1000.0),
                             StageBudget("seconds", 2.0))
    fresh = StageResult("s")
    assert not any(b.spent(fresh) or b.last_step(fresh) for b in (steps, flops, seconds))
    taken = StageResult("s", steps=5, flops=500.0, horizon=5)
    assert all(b.spent(taken) and b.last_step(taken) for b in (steps, flops))
    assert not steps.spent(replace(taken, steps=4)) and not steps.last_step(replace(taken, steps=4))
    grown = StageResult("s", steps=3, flops=1000.0, horizon=5)  # steps that grew spent it early
    assert flops.spent(grown) and not flops.last_step(grown), "no last step's validation"
    assert not steps.spent(grown)
    timed = StageResult("s", steps=9, seconds=2.0)
    assert seconds.spent(timed) and seconds.last_step(timed)
    assert not seconds.spent(replace(timed, seconds=1.9))
    assert not seconds.last_step(replace(timed, seconds=1.9))


def test_losses_reach_the_host_every_few_steps_not_every_step(tmp_path, monkeypatch):
    """A read of the losses waits for the device: it happens every FLUSH_EVERY steps and at
    each validation (every 4 here) and at the end, each read covering the steps since the last."""
    import bench.training.train

    reads: list[int] = []
    flush = bench.training.train._Pending.flush

    def counted(self, seconds, result):
        reads.append(len(self.losses))
        return flush(self, seconds, result)

    monkeypatch.setattr(bench.training.train._Pending, "flush", counted)
    torch.manual_seed(0)
    result = train_stage(regression_stage(stack()), StageBudget("steps", 25), tmp_path,
                         torch.device("cpu"), LOG, progress=False)
    assert bench.training.train.FLUSH_EVERY == 10
    assert reads == [4, 4, 2, 2, 4, 4, 4, 1]  # after steps 4, 8, 10, 12, 16, 20, 24 and 25
    assert [r["step"] for r in result.curve] == list(range(1, 26))
    assert all(math.isfinite(r["loss"]) and r["wall"] > 0 for r in result.curve)


def test_seconds_budget_overshoots_by_at_most_one_step(tmp_path):
    torch.manual_seed(0)
    result = train_stage(regression_stage(stack()), StageBudget("seconds", 0.05), tmp_path,
                         torch.device("cpu"), LOG, progress=False)
    walls = [0.0] + [r["wall"] for r in result.curve]
    assert result.seconds >= 0.05 > walls[-2]  # the last step began inside the budget


def test_non_finite_loss_fails_the_stage(tmp_path):
    with pytest.raises(RunFailed, match="loss is nan at step 2"):
        train_stage(regression_stage(stack(), poison=True), StageBudget("steps", 5), tmp_path,
                    torch.device("cpu"), LOG, progress=False)


def test_interrupted_stage_resumes_to_the_same_weights(tmp_path):
    torch.manual_seed(0)
    straight = stack()
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    ref = train_stage(regression_stage(straight), StageBudget("steps", 12), tmp_path / "a",
                      torch.device("cpu"), LOG, progress=False)

    resumed = stack()
    resumed.load_state_dict(initial)
    with pytest.raises(KeyboardInterrupt):
        train_stage(regression_stage(resumed, checkpoint_every=3, fail_at=7),
                    StageBudget("steps", 12), tmp_path / "b", torch.device("cpu"), LOG,
                    progress=False)
    fresh = stack()  # a new process: weights from the checkpoint, not from memory
    result = train_stage(regression_stage(fresh, checkpoint_every=3), StageBudget("steps", 12),
                         tmp_path / "b", torch.device("cpu"), LOG, progress=False)
    assert result.steps == ref.steps == 12
    for k, v in straight.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    assert [r["loss"] for r in result.curve] == [r["loss"] for r in ref.curve]
    # a finished stage is not trained again
    again = train_stage(regression_stage(stack()), StageBudget("steps", 12), tmp_path / "b",
                        torch.device("cpu"), LOG, progress=False)
    assert again.steps == 12
