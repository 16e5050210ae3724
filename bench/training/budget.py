"""Budgets: what a stage may spend, how many steps that buys, and the schedule it implies.

A budget sets the schedule's horizon (steps = budget / cost per step) instead of cutting a longer
schedule short, so every variant's learning rate fully decays within the same compute
(Kaddour et al. 2023). For wall-clock budgets the schedule follows the elapsed fraction of the
budget (Li et al. 2020). FLOPs and token budgets never overshoot: a stage takes the whole steps
the budget affords, so what is left unspent is less than one step.
"""

import math
from dataclasses import dataclass

from bench.contract import MAX_STEPS, BudgetConfig, StageResult, StepCost
from bench.errors import UserError
from bench.schema import OptimConfig


@dataclass(frozen=True)
class StageBudget:
    """One stage's share of a run's budget, in the budget's unit."""

    unit: str  # flops | tokens | images | steps | seconds
    amount: float

    def horizon(self, cost: StepCost) -> int | None:
        """Optimizer steps this budget buys at `cost` per step; None for wall-clock budgets."""
        if self.unit == "seconds":
            return None
        per_step = {"flops": cost.flops, "steps": 1}.get(self.unit, cost.items)
        steps = math.floor(self.amount / per_step + 1e-9)
        if steps < 1:
            raise UserError(f"a budget of {self.amount:g} {self.unit} does not buy one step "
                            f"(one step costs {per_step:g} {self.unit})")
        if steps > MAX_STEPS:
            raise UserError(f"a budget of {self.amount:g} {self.unit} buys {steps:.3g} steps "
                            f"(one step costs {per_step:g} {self.unit}), more than the "
                            f"{MAX_STEPS:.0e} a run may take")
        return steps

    def spent(self, result: StageResult) -> bool:
        """Whether the stage at `result` takes no further step: the steps bought are taken, or
        the meter of a seconds or FLOPs budget has run out (steps that grow, such as padded
        images, spend a FLOPs budget before the horizon priced on the first one)."""
        if self.unit == "seconds" and result.seconds >= self.amount:
            return True
        if result.horizon is not None and result.steps >= result.horizon:
            return True
        return self.unit == "flops" and result.flops >= self.amount

    def last_step(self, result: StageResult) -> bool:
        """Whether the step that brought the stage to `result` ends its schedule, so that it
        validates and finishes: the steps bought are taken, or a seconds budget's time is spent
        (known once the step's time is read). A FLOPs budget that runs out before its horizon
        stops at `spent` instead, without a last step's validation."""
        if self.unit == "seconds":
            return result.seconds >= self.amount
        return result.horizon is not None and result.steps >= result.horizon


def split_budget(budget: BudgetConfig, stages: list[str]) -> dict[str, StageBudget]:
    """Each stage's budget (none for a run that trains nothing); the split was checked
    against the stages when the suite loaded."""
    shares = budget.split or dict.fromkeys(stages[:1], 1.0)
    return {s: StageBudget(budget.unit, budget.amount * shares[s]) for s in stages}


def lr_factor(optim: OptimConfig, progress: float, horizon: int | None) -> float:
    """Learning-rate multiplier at `progress` in (0, 1] of the stage (1 = the budget's end).

    `progress` is taken after the step, so the last step of a budget runs at the final rate.
    Warm-up is linear over its fraction of the stage, or over its steps (which needs a known
    horizon). wsd holds 1 until its cooldown, the last `decay` of the stage, which falls as
    1 - sqrt to `min_lr_ratio` (Hägele et al. 2024, arXiv 2405.18392: the best cooldown shape).
    """
    p = min(max(progress, 0.0), 1.0)
    warming = _warmup_factor(optim, p, horizon)
    if warming is not None:
        return warming
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "step":
        return optim.gamma ** sum(p >= m for m in optim.milestones)
    low = optim.min_lr_ratio
    if optim.schedule == "wsd":
        start = 1 - optim.decay
        # over (1 - start), not decay, so that p = 1 ends at exactly min_lr_ratio
        return 1.0 if p <= start else low + (1 - low) * (1 - math.sqrt((p - start) / (1 - start)))
    warm = min(optim.warmup / horizon, 1.0) if optim.warmup >= 1 and horizon else optim.warmup
    q = (p - warm) / (1 - warm) if warm < 1 else 1.0
    if optim.schedule == "linear":
        return 1 - (1 - low) * q
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * q))


def _warmup_factor(optim: OptimConfig, p: float, horizon: int | None) -> float | None:
    """The warm-up's multiplier at progress `p`, None once it is over. A warm-up in steps is
    counted in whole steps, so stages of any horizon (the rungs of a ladder) warm up through
    bit-identical rates."""
    if optim.warmup < 1:
        return p / optim.warmup if p < optim.warmup else None
    if horizon is None:
        raise UserError("warmup in steps needs a budget whose steps are known in advance "
                        "(flops, tokens, images or steps); give warmup as a fraction")
    span, done = min(optim.warmup, horizon), round(p * horizon)
    return done / span if done < span else None


def shared_steps(optim: OptimConfig, horizon: int) -> int:
    """The leading steps of a wsd stage of `horizon` steps whose rates do not depend on the
    horizon (a warm-up in steps, then the stable rate), short of its last step: every longer
    rung of a ladder trains them alike, so this rung may start from a longer one's checkpoint
    after them and train only its cooldown (Hägele et al. 2024). 0 for other schedules."""
    if optim.schedule != "wsd" or 0 < optim.warmup < 1 or optim.warmup > horizon:
        return 0  # a warm-up as a fraction, or longer than the stage, depends on the horizon
    start = 1 - optim.decay
    stable = math.floor(start * horizon)  # steps s with (s + 1) / horizon <= start, as in
    while stable < horizon and (stable + 1) / horizon <= start:  # lr_factor's float test
        stable += 1
    while stable > 0 and stable / horizon > start:
        stable -= 1
    warming = math.ceil(optim.warmup) - 1 if optim.warmup >= 1 else 0
    return min(max(stable, warming), horizon - 1)
