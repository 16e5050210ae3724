"""Validated configuration of one language-model run (no torch import: validation stays fast)."""

from typing import Literal

from pydantic import Field, model_validator

from bench.schema import Int, OptimConfig, Strict
from bench.text.config import CWTConfig, DataConfig, TrainConfig


class ModelConfig(Strict):
    """A GPTNeoX decoder: a named preset, optionally with some dimensions overridden."""

    preset: Literal["pythia-70m", "small", "tiny", "micro"]
    hidden_size: Int | None = Field(None, gt=0)
    num_layers: Int | None = Field(None, gt=0)
    num_heads: Int | None = Field(None, gt=0)
    intermediate_size: Int | None = Field(None, gt=0)
    context: Int | None = Field(None, gt=1, description="maximum positions")


class HeadFinetuneConfig(Strict):
    """The 'Headless + FT' stage: an untied head initialised from the input embeddings."""

    mode: Literal["full", "probe"] = Field("full", description="probe: train the head only")
    batch_size: Int | None = Field(None, gt=0, description="default: the pretraining batch")
    optim: OptimConfig


class LMConfig(Strict):
    """Everything that defines one causal-LM run apart from its seed and budget."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    objective: Literal["softmax", "cwt"]
    head: Literal["lm_head", "embedding_transpose", "finetune"] = Field(
        "lm_head", description="how the model scores tokens for evaluation"
    )
    cwt: CWTConfig = CWTConfig()
    head_finetune: HeadFinetuneConfig | None = None

    @model_validator(mode="after")
    def _head_matches_objective(self) -> "LMConfig":
        if self.objective == "softmax" and self.head != "lm_head":
            raise ValueError("objective 'softmax' trains its own head: use head 'lm_head'")
        if self.objective == "cwt" and self.head == "lm_head":
            raise ValueError(
                "objective 'cwt' has no head: use head 'embedding_transpose' or 'finetune'"
            )
        if self.head == "finetune" and self.head_finetune is None:
            raise ValueError("head 'finetune' needs a 'head_finetune' block (mode, optim)")
        return self

    def stages(self) -> list[str]:
        """Training stages of this run, in order; each draws on its share of the budget."""
        return ["pretrain", "head_finetune"] if self.head == "finetune" else ["pretrain"]

    def head_finetune_batch(self) -> int:
        """Sequences per step of the head fine-tuning: its own batch, else pretraining's."""
        assert self.head_finetune is not None  # `_head_matches_objective` requires it
        return self.head_finetune.batch_size or self.train.batch_size

