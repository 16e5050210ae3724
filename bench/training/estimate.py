"""What planned runs will spend, before any starts: per stage the steps a budget buys at the
family's priced step, and the FLOPs and items (tokens, images) those steps take; totals by
variant and for the suite; device-hours at an accelerator's peak and an assumed MFU.

FLOPs are counted as the budget counts them (forward and backward: `bench.training.flops`). A
stage under a seconds budget takes steps until its time is up: its FLOPs are not known in
advance, its device time is (the budget on every process). A variant's per-step FLOPs are what
its first step costs; steps that grow (padded images) make that a lower bound.
"""

import math
from dataclasses import dataclass

from bench.contract import Family, RunSpec, StepCost, stages_of
from bench.errors import UserError
from bench.training.accelerators import ACCELERATORS, TERA, Accelerator, find_accelerator
from bench.training.budget import StageBudget, split_budget

# Variants under one tokens, images or steps budget whose FLOPs differ by more than this factor
# are not compared at equal compute, which a reader of the plan should be told.
FLOPS_SPREAD = 1.10


@dataclass(frozen=True)
class StageSpend:
    """One stage of a run: its budget, the cost of a step, and the steps bought (None: until a
    seconds budget is spent)."""

    stage: str
    budget: StageBudget
    cost: StepCost
    steps: int | None

    @property
    def flops(self) -> float | None:
        return None if self.steps is None else self.steps * self.cost.flops

    @property
    def items(self) -> int | None:
        return None if self.steps is None else self.steps * self.cost.items


@dataclass(frozen=True)
class RunSpend:
    """A planned run and what each of its stages will spend."""

    run: RunSpec
    stages: list[StageSpend]

    @property
    def flops(self) -> float | None:
        """The run's FLOPs; None when a stage runs on a seconds budget."""
        return None if self.timed_seconds else self.known_flops

    @property
    def known_flops(self) -> float:
        """The FLOPs of the stages whose steps are known."""
        return sum(s.flops or 0.0 for s in self.stages)

    @property
    def known_items(self) -> int:
        return sum(s.items or 0 for s in self.stages)

    @property
    def timed_seconds(self) -> float:
        """Wall seconds of the stages under a seconds budget."""
        return sum(s.budget.amount for s in self.stages if s.steps is None)


@dataclass(frozen=True)
class Total:
    """What a group of runs (a variant's, the suite's) will spend together: the FLOPs and items
    of the stages whose steps are known, and the wall time of those under a seconds budget."""

    label: str
    runs: int
    flops: float
    items: int
    timed_seconds: float

    def device_hours(self, peak_flops: float, mfu: float, processes: int) -> float:
        """Device-hours on `processes` devices of `peak_flops` each, running at `mfu`: the known
        FLOPs at that rate, plus every timed stage's wall time on each device."""
        return (self.flops / (peak_flops * mfu) + self.timed_seconds * processes) / 3600


def spend(family: Family, runs: list[RunSpec], processes: int = 1) -> list[RunSpend]:
    """Each run's stages with the steps their budgets buy at the family's priced step costs on
    `processes` processes (a budget that buys no step is a UserError naming it); a reference
    variant's runs train nothing."""
    costs: dict[str, dict[str, StepCost]] = {}
    planned = []
    for run in runs:
        stages = stages_of(family, run.variant)  # none: a reference variant's checkpoint
        if stages and run.variant.name not in costs:
            costs[run.variant.name] = family.step_costs(run.config, processes)
        stage_costs = costs.get(run.variant.name, {})
        budgets = split_budget(run.variant.budget, stages)
        planned.append(RunSpend(run, [StageSpend(name, b, stage_costs[name],
                                                 b.horizon(stage_costs[name]))
                                      for name, b in budgets.items()]))
    return planned


def totals(planned: list[RunSpend]) -> list[Total]:
    """One total per variant, in plan order, then the suite's."""
    by_variant: dict[str, list[RunSpend]] = {}
    for p in planned:
        by_variant.setdefault(p.run.variant.name, []).append(p)
    return [_total(name, group) for name, group in by_variant.items()] + [
        _total("suite", planned)]


def _total(label: str, group: list[RunSpend]) -> Total:
    return Total(label, len(group), sum(p.known_flops for p in group),
                 sum(p.known_items for p in group), sum(p.timed_seconds for p in group))


def flops_spread(planned: list[RunSpend]) -> list[str]:
    """A line for each tokens, images or steps budget under which variants' runs differ in
    FLOPs by more than `FLOPS_SPREAD`: they are then not compared at equal compute."""
    by_budget: dict[tuple[str, float], dict[str, float]] = {}
    for p in planned:
        budget = p.run.variant.budget
        if budget.unit in ("flops", "seconds") or p.flops is None or not p.run.variant.trains:
            continue
        by_budget.setdefault((budget.unit, budget.amount), {})[p.run.variant.name] = p.flops
    lines = []
    for (unit, amount), flops in by_budget.items():
        low, high = min(flops, key=flops.__getitem__), max(flops, key=flops.__getitem__)
        if flops[high] > FLOPS_SPREAD * flops[low]:
            listed = ", ".join(f"{name} {value:.3g}" for name, value in flops.items())
            lines.append(f"under one budget of {amount:g} {unit}, {high} spends "
                         f"{flops[high] / flops[low]:.2f}x the FLOPs of {low} a run ({listed}): "
                         "not equal compute; a flops budget compares at equal compute")
    return lines


def accelerator(name: str) -> Accelerator:
    """The table's accelerator for a name given on the command line (`h100`, `A100`); a
    UserError lists the names with a known peak when none matches or its peak is unknown."""
    found = find_accelerator(name)
    if found is None or found.peak_tflops is None:
        known = ", ".join(a.name for a in ACCELERATORS if a.peak_tflops is not None)
        why = "no known peak" if found is not None else "not a known accelerator"
        raise UserError(f"--accelerator {name}: {why}; known: {known}")
    return found


def check_mfu(mfu: float) -> float:
    if not (math.isfinite(mfu) and 0 < mfu <= 1):
        raise UserError(f"--mfu {mfu:g}: expected a fraction of the peak in (0, 1]")
    return mfu


def peak(acc: Accelerator) -> float:
    """The accelerator's dense peak in FLOP/s (`accelerator` only returns ones that have it)."""
    assert acc.peak_tflops is not None
    return acc.peak_tflops * TERA
