"""The contract between the core and a study family, and the registry of families.

The core (suite, plan, run, budget, store, report) never imports a family's model code: it asks
the family, by the name a suite gives, for its config schema, its stages and their step costs, and
to execute one run. A family's heavy imports (torch, transformers) stay inside `execute` and
`step_costs`, so validating a suite is fast.
"""

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from bench.plan import RunSpec
    from bench.runner import RunContext


@dataclass(frozen=True)
class StepCost:
    """What one optimizer step of a stage costs: FLOPs (forward + backward) and items."""

    flops: float
    items: int


class Family(Protocol):
    """What a study family provides to the core."""

    name: str
    item_unit: str  # the budget unit a family counts its training data in ("tokens", "images")
    config_model: type[BaseModel]
    eval_models: dict[str, type[BaseModel]]
    default_metrics: list[str]
    higher_is_better: dict[str, bool]
    report_curve: str  # the curve metric a report plots against training FLOPs

    def stages(self, config: Any) -> list[str]:
        """Training stages of a run, in order; each has a share of the budget."""
        ...

    def step_costs(self, config: Any, processes: int = 1) -> dict[str, StepCost]:
        """Cost of one optimizer step of every stage on `processes` processes together (each
        takes an equal share of the batch), measured without training (for plans)."""
        ...

    def inputs(self, config: Any, evals: list[tuple[str, BaseModel]]) -> dict[str, str]:
        """The files and folders a run reads (data, tokenizer, evaluation sets, pretrained
        weights), by a label such as 'data.train'; their contents go into the run's identity."""
        ...

    def derived_inputs(self, config: Any) -> dict[str, dict[str, str]]:
        """Data a run reads that is made from its inputs (token shards), as label ->
        {'path', 'sha256'}: the fingerprint joins the run's identity like an input's."""
        ...

    def execute(self, run: "RunSpec", ctx: "RunContext") -> None:
        """Build, train (through ctx.train), evaluate and record one run."""
        ...


_FAMILIES = {"lm": "bench.lm.family", "encoder": "bench.encoder.family",
             "faces": "bench.faces.family"}


def known_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered under `name` (its module exposes `FAMILY`)."""
    return import_module(_FAMILIES[name]).FAMILY
