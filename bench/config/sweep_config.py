"""The `sweep:` block of a suite: a search space over config fields, an objective, a sampler and a
pruner (validated without importing Optuna, so `bench validate` stays fast)."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from bench.schema import Float, Int, Strict


class FloatParam(Strict):
    type: Literal["float"]
    low: Float
    high: Float
    log: bool = False
    step: Float | None = Field(None, gt=0, description="a grid step (not with log)")

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("a log-scale range has no step")
        return self


class IntParam(Strict):
    type: Literal["int"]
    low: Int
    high: Int
    log: bool = False
    step: Int = Field(1, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("a log-scale range has step 1")
        return self


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low {low} is above high {high}")
    if log and low <= 0:
        raise ValueError("a log-scale range needs low > 0")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class ObjectiveSpec(Strict):
    """The final metric each trial is scored by (a run metric, e.g. lambada.acc or val.nll)."""

    metric: str
    direction: Literal["maximize", "minimize"]


class SamplerSpec(Strict):
    name: Literal["tpe", "random"] = "tpe"
    seed: Int = Field(0, description="worker k of a sweep samples with seed + k")
    n_startup_trials: Int = Field(10, ge=0, description="TPE: random trials before modelling")


class PrunerSpec(Strict):
    """Stops unpromising trials early from the validation metrics reported during training.

    Intermediate values are reported at each validation as the percent of the run's budget spent
    (0-100 per stage, stage k adding 100 k), so trials of different batch sizes compare at equal
    compute. `direction` is the metric's own; values are negated when it is not the study's.
    """

    name: Literal["none", "median", "hyperband"] = "median"
    metric: str = Field("val_loss", description="a validation column of the training curve")
    direction: Literal["maximize", "minimize"] = "minimize"
    n_startup_trials: Int = Field(3, ge=0, description="median: trials before pruning starts")
    n_warmup_steps: Int = Field(20, ge=0, description="median: percent of budget never pruned")
    min_resource: Int = Field(10, gt=0, description="hyperband: percent of budget of a rung")
    reduction_factor: Int = Field(3, gt=1, description="hyperband")


class SweepConfig(Strict):
    """An Optuna study over one variant of the suite; every trial is an ordinary run."""

    variant: str | None = Field(
        None, description="the variant swept (default: the first that trains)")
    study: str | None = Field(None, description="the study's name (default: '<suite>.sweep')")
    trials: Int = Field(gt=0, description="complete (or pruned) trials the study reaches")
    seed: Int | None = Field(None, description="the training seed of every trial "
                             "(default: the suite's first seed)")
    objective: ObjectiveSpec
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    space: dict[str, Param] = Field(min_length=1, description="dotted config field -> range")
