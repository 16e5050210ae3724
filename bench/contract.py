"""The ground floor: the types the core, the study families and the evaluators are written
against, and nothing else.

The core (suite, plan, run, budget, store, report) hands a family a `RunSpec` and a `RunContext`;
the family prices its steps as `StepCost`s, trains through `RunContext.train(Stage)` (the loop
options from its loop settings: `loop_options`) and hands its trained model to
`RunContext.evaluate` as an adapter (see `bench.evals.adapters`). This module imports no other
part of the harness except the plain schemas, and no torch at run time, so that every floor above
can import it and a type checker can hold each family to `Family` of its own config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypedDict, TypeVar

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from bench.resources import Resources
from bench.schema import Float, Int, LoopConfig, OptimConfig, Strict

if TYPE_CHECKING:
    import logging

    import torch
    from torch import nn

UNITS = ("flops", "tokens", "images", "steps", "seconds")
# More optimizer steps than any run takes (Pythia-70M: 143,000): a larger count is a mistake.
MAX_STEPS = 10**9
# Budgets in one ladder. Every rung is a run per variant and seed, and a compute curve needs a
# handful (papers fit 5 to 10); 64 rungs, a factor of 2 apart, span 19 decades of compute, and
# plans, stores and reports stay small.
MAX_RUNGS = 64


BUDGET_FORMS = ("one budget", "ladder of budgets")  # how a budget may be written (error paths)


def _one_or_ladder(amount: Any) -> type:
    """One budget, or a ladder of them (a list), each amount validated as `amount`; errors
    come from the form given, not from both."""
    one, ladder = BUDGET_FORMS
    return Annotated[  # type: ignore[return-value]
        Annotated[list[amount], Tag(ladder)] | Annotated[amount, Tag(one)],
        Discriminator(lambda v: ladder if isinstance(v, list) else one)]


PositiveFloat = _one_or_ladder(Annotated[Float, Field(gt=0)])
StepCount = _one_or_ladder(Annotated[Int, Field(gt=0, le=MAX_STEPS)])


class BudgetConfig(Strict):
    """One training budget per run: exactly one unit, optionally split over training stages.

    A list of amounts is a ladder: every rung is a run of its own, with its own learning-rate
    horizon, so a metric can be read against compute."""

    flops: PositiveFloat | None = None  # type: ignore[valid-type]
    tokens: PositiveFloat | None = None  # type: ignore[valid-type]
    images: PositiveFloat | None = None  # type: ignore[valid-type]
    steps: StepCount | None = None  # type: ignore[valid-type]
    seconds: PositiveFloat | None = None  # type: ignore[valid-type]
    split: dict[str, Float] | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> BudgetConfig:
        given = [u for u in UNITS if getattr(self, u) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one budget unit out of {', '.join(UNITS)}; got {given}")
        rungs = getattr(self, given[0])
        if isinstance(rungs, list) and (not rungs or any(
                b <= a for a, b in pairwise(rungs))):
            raise ValueError("a ladder of budgets lists at least one amount, in increasing order")
        if isinstance(rungs, list) and len(rungs) > MAX_RUNGS:
            raise ValueError(f"a ladder of budgets lists at most {MAX_RUNGS} amounts (each is a "
                             f"run per variant and seed); got {len(rungs)}")
        if self.split is not None:
            if any(v <= 0 for v in self.split.values()):
                raise ValueError("split shares must be positive")
            if abs(sum(self.split.values()) - 1) > 1e-9:
                total = sum(self.split.values())
                raise ValueError(f"split shares must add up to 1, they add up to {total}")
        return self

    @property
    def unit(self) -> str:
        return next(u for u in UNITS if getattr(self, u) is not None)

    @property
    def amount(self) -> float:
        """The budget of one run (a ladder has one per rung: see `rungs`)."""
        value = getattr(self, self.unit)
        if isinstance(value, list):
            raise ValueError(f"a ladder of {len(value)} budgets has no single amount")
        return float(value)

    @property
    def is_ladder(self) -> bool:
        return isinstance(getattr(self, self.unit), list)

    def rungs(self) -> list[BudgetConfig]:
        """One budget per rung, in increasing order (a single budget is a ladder of one)."""
        value = getattr(self, self.unit)
        amounts = value if isinstance(value, list) else [value]
        return [self.model_copy(update={self.unit: a}) for a in amounts]


@dataclass(frozen=True)
class StepCost:
    """What one optimizer step of a stage costs: FLOPs (forward + backward) and items."""

    flops: float
    items: int


@dataclass(frozen=True)
class Variant:
    """One variant, fully resolved: the family config, budget and evals it runs with."""

    name: str
    config: Any  # the family's `config_model`, validated
    budget: BudgetConfig
    evals: list[tuple[str, BaseModel]]  # (evaluator name, its validated config), in suite order
    resolved: dict[str, Any]  # plain data, hashed into run ids and stored with every run
    # what the run's cluster job asks for: where it runs, not what it computes (not in `resolved`)
    resources: Resources = field(default_factory=Resources)
    rung: bool = False  # one budget of a ladder (its runs are told apart by their budget)
    # A reference variant: the checkpoint it scores with the suite's evaluators, training
    # nothing (`Family.score`); its budget is the suite's, unspent.
    checkpoint: str | None = None

    @property
    def trains(self) -> bool:
        """Whether its runs train (a reference variant's only score its checkpoint)."""
        return self.checkpoint is None


@dataclass(frozen=True)
class RunSpec:
    """One run: a resolved variant, a seed and the inputs it reads; its id hashes all three."""

    suite: str
    variant: Variant
    seed: int
    run_id: str
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> path, sha256
    # A rung of a wsd ladder (see bench.training.checkpoints.Branches); where its shared steps
    # come from, not what it computes, so not hashed. A lower rung: the longest rung's run id,
    # whose folder holds its branch checkpoint. The longest rung: the lower rungs' budgets.
    branch_source: str | None = None
    branch_rungs: tuple[BudgetConfig, ...] = ()
    # The command-line overrides its suite was loaded with (their effect is in the config, so
    # hashed; the text is recorded in provenance).
    overrides: tuple[str, ...] = ()
    # The trackers it reports to while it trains (`tracking:`, `--track`): who watches, not
    # what it computes, so not hashed.
    tracking: tuple[str, ...] = ()

    @property
    def config(self) -> Any:
        return self.variant.config

    @property
    def resolved(self) -> dict[str, Any]:
        """The configuration the run depends on, as stored in its folder and in the index."""
        return {**self.variant.resolved, "seed": self.seed}

    @property
    def label(self) -> str:
        """The run in words: variant and seed, and the budget when it is a ladder's rung."""
        budget = self.variant.budget
        rung = f" at {budget.amount:g} {budget.unit}" if self.variant.rung else ""
        return f"{self.variant.name} seed {self.seed}{rung}"


@dataclass
class Stage:
    """What a family hands to the training loop (`RunContext.train`) for one training stage."""

    name: str
    model: nn.Module
    parameters: list[nn.Parameter]
    optim: OptimConfig
    micro_batches: Callable[[int], list[Any]]  # step index -> its micro-batches
    loss: Callable[[Any], torch.Tensor]  # mean loss of one micro-batch
    items: Callable[[Any], int]  # tokens (or images) in one micro-batch
    validate: Callable[[int], dict[str, float]] | None = None  # steps done -> metrics
    validate_every: int = 50
    checkpoint_every: int = 50
    bf16: bool = False
    compile: bool = False  # the loss runs through torch.compile; FLOPs are counted eagerly
    seed: int = 0  # with the step and the micro-batch's place in it, seeds the micro-batch
    solo: bool = False  # trained by this process alone (evaluation's fine-tuning, on rank 0)


class LoopOptions(TypedDict):
    """The `Stage` fields a family's loop settings decide, the same for each of its stages."""

    checkpoint_every: int
    bf16: bool
    compile: bool


def loop_options(loop: LoopConfig, device: torch.device) -> LoopOptions:
    """A `Stage`'s loop options from a family's loop settings, for a run on `device`."""
    return LoopOptions(checkpoint_every=loop.checkpoint_every,
                       bf16=loop.autocast_bf16(device.type), compile=loop.compile)


@dataclass
class StageResult:
    """What a stage consumed and reached; recorded per stage."""

    name: str
    steps: int = 0
    flops: float = 0.0
    items: int = 0
    seconds: float = 0.0
    final_loss: float = math.nan
    horizon: int | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    peak_memory: float = math.nan  # bytes the device allocated at most (GPUs only)
    world_size: int = 1  # processes that trained the stage

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.nan


class RunContext(Protocol):
    """What a family's `execute` gets: where the run lives and how to train, evaluate and
    record it. Only the process that writes the run (`main`) evaluates and records."""

    run: RunSpec
    dir: Path  # the run's folder
    device: torch.device
    log: logging.Logger
    cache_dir: Path  # derived data shared between runs (token shards)
    progress: bool  # show progress bars
    provenance: dict[str, Any]  # what the family adds to the run's provenance

    @property
    def main(self) -> bool:
        """Whether this process writes the run and evaluates it (rank 0 of a torchrun job)."""
        ...

    def train(self, stage: Stage) -> StageResult:
        """Spend the stage's share of the run's budget on it (checkpointed, resumable)."""
        ...

    def evaluate(self, model: object) -> None:
        """Score `model` (an adapter: see `bench.evals.adapters`) with every evaluator the
        variant names, and record their metrics, curves and per-example outputs."""
        ...

    def record(self, metrics: dict[str, float]) -> None:
        """Add metrics of the run (the family's own: parameter counts, validation loss)."""
        ...


# A family's config model: its `Family` methods take the config it validates.
C = TypeVar("C", bound=BaseModel)


class Family(Protocol[C]):
    """What a study family provides to the core, typed by its config model `C` (a family
    module declares `FAMILY: Family[ItsConfig]`; the registry hands out `Family[Any]`). Its
    heavy imports (torch, transformers) sit behind one lazy import in `step_costs` and
    `execute`, so validating a suite imports no torch."""

    name: str
    item_unit: str  # the budget unit a family counts its training data in ("tokens", "images")
    # The layout of the text rows it trains on, in which `bench data tokenize` builds a suite's
    # token shards ahead of its runs ("causal", "mlm": bench.text.shards); None: no text corpus.
    text_layout: str | None
    default_metrics: list[str]  # what a report shows unless the suite says otherwise
    report_curve: str  # the curve metric a report plots against training FLOPs
    # What a reference variant's checkpoint (`checkpoint:` in a suite: a model trained
    # elsewhere, such as a released one, scored beside the trained variants) is, in words.
    checkpoint_form: str

    @property
    def higher_is_better(self) -> Mapping[str, bool | None]:
        """Which way each of the family's own metrics is better, by rule: shell-style patterns
        (`val.*.nll`, `model.*_params`) to True (larger is better), False (smaller) or None
        (neither, by decision); the first pattern that matches a name decides. Every metric the
        family records matches one: a report naming a metric none matches is refused at load.
        The core says it for `train.*`, evaluators for theirs."""
        ...

    @property
    def config_model(self) -> type[C]:
        """The schema of one run's config (a suite's family keys); no torch import."""
        ...

    @property
    def adapters(self) -> tuple[type, ...]:
        """The adapter protocols (bench.evals.adapters) its trained models provide."""
        ...

    def stages(self, config: C) -> list[str]:
        """Training stages of a run, in order; each has a share of the budget."""
        ...

    def step_costs(self, config: C, processes: int = 1) -> dict[str, StepCost]:
        """Cost of one optimizer step of every stage on `processes` processes together (each
        takes an equal share of the batch), measured without training (for plans)."""
        ...

    def inputs(self, config: C) -> dict[str, str]:
        """The files and folders a run's training reads (data, tokenizer, pretrained weights),
        by a label such as 'data.train'; their contents go into the run's identity."""
        ...

    def derived_inputs(self, config: C) -> dict[str, dict[str, str]]:
        """Data a run reads that is made from its inputs (token shards), as label ->
        {'path', 'sha256'}: the fingerprint joins the run's identity like an input's."""
        ...

    def data_root(self, config: C) -> str | None:
        """The folder of the run's training data, for evaluation sets that lie beside it by
        default (a WIDER FACE root holds both splits); None when there is none."""
        ...

    def execute(self, run: RunSpec, ctx: RunContext) -> None:
        """Build, train (through ctx.train) and evaluate (ctx.evaluate) one run."""
        ...

    def scoring(self, config: C) -> dict[str, Any]:
        """What `score` reads of a config besides the checkpoint (plain data: a detector's
        architecture, evaluation's precision): with the checkpoint's contents and the
        evaluators' settings, a reference run's identity, so a change of training settings
        does not score the checkpoint again."""
        ...

    def score(self, run: RunSpec, ctx: RunContext) -> None:
        """Load the checkpoint of a reference variant (`run.variant.checkpoint`) and hand it to
        ctx.evaluate as the family's trained models are; trains nothing, and is called in the
        process that writes the run alone (`ctx.main`). A checkpoint that is not of
        `checkpoint_form` is a UserError naming it."""
        ...


def stages_of(family: Family[Any], variant: Variant) -> list[str]:
    """The training stages of a variant's runs: the family's, none for a reference variant."""
    return family.stages(variant.config) if variant.trains else []
