"""Budgets: what a stage may spend, how many steps that buys, and the schedule it implies.

A budget sets the schedule's horizon (steps = budget / cost per step) instead of cutting a longer
schedule short, so every variant's learning rate fully decays within the same compute
(Kaddour et al. 2023). For wall-clock budgets the schedule follows the elapsed fraction of the
budget (Li et al. 2020). FLOPs and token budgets never overshoot: a stage takes the whole steps
the budget affords, so what is left unspent is less than one step.
"""

import math
from dataclasses import dataclass

from bench.contract import MAX_STEPS, BudgetConfig, StepCost
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


def split_budget(budget: BudgetConfig, stages: list[str]) -> dict[str, StageBudget]:
    """Each stage's budget; the split was checked against the stages when the suite loaded."""
    shares = budget.split or {stages[0]: 1.0}
    return {s: StageBudget(budget.unit, budget.amount * shares[s]) for s in stages}


def lr_factor(optim: OptimConfig, progress: float, horizon: int | None) -> float:
    """Learning-rate multiplier at `progress` in (0, 1] of the stage (1 = the budget's end).

    `progress` is taken after the step, so the last step of a budget runs at the final rate.
    Warm-up is linear over its fraction of the stage (given in steps, it needs a known horizon).
    """
    warm = optim.warmup
    if warm >= 1:
        if horizon is None:
            raise UserError("warmup in steps needs a budget whose steps are known in advance "
                            "(flops, tokens, images or steps); give warmup as a fraction")
        warm = min(warm / horizon, 1.0)
    p = min(max(progress, 0.0), 1.0)
    if warm > 0 and p < warm:
        return p / warm
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "step":
        return optim.gamma ** sum(p >= m for m in optim.milestones)
    q = (p - warm) / (1 - warm) if warm < 1 else 1.0
    low = optim.min_lr_ratio
    if optim.schedule == "linear":
        return 1 - (1 - low) * q
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * q))
