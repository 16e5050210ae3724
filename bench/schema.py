"""Pieces of configuration schema shared by the core and every study family."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(Strict):
    """Optimiser and learning-rate schedule of one training stage.

    The schedule is a function of training progress (0 at the start of the stage, 1 where its
    budget ends), so warm-up plus decay always ends exactly at the budget's end.
    """

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant", "step"] = "cosine"
    warmup: float = Field(
        0.0, ge=0, description="warm-up: a fraction of the stage (< 1) or a number of steps (>= 1)"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final / peak lr: cosine, linear")
    milestones: tuple[float, ...] = Field(
        (), description="step schedule: fractions of the stage where the lr is multiplied by gamma"
    )
    gamma: float = Field(0.1, gt=0)
    clip: float | None = Field(1.0, gt=0, description="gradient-norm clipping; null for none")

    @model_validator(mode="after")
    def _milestones_are_fractions(self) -> "OptimConfig":
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("milestones must be fractions of the stage, strictly between 0 and 1")
        return self
