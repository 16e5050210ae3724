"""Validated configuration of one encoder (masked-LM) run (no torch import).

The data, tokenizer, batch and CWT blocks are the causal study's own schema: one corpus pipeline and
one training-loop configuration serve both studies.
"""

from typing import Literal

from pydantic import Field, model_validator

from bench.schema import Float, Int, Strict
from bench.text.config import CWTConfig, DataConfig, TrainConfig

OBJECTIVES = ("softmax", "cwt", "ce+cwt", "nce")


class EncoderModelConfig(Strict):
    """A BERT encoder: a named preset, optionally with some dimensions overridden
    (`distilbert-multilingual`: a DistilBERT-style encoder, see bench/encoder/model.py)."""

    preset: Literal["bert-base", "bert-small", "bert-mini", "bert-tiny", "distilbert-multilingual"]
    hidden_size: Int | None = Field(None, gt=0)
    num_layers: Int | None = Field(None, gt=0)
    num_heads: Int | None = Field(None, gt=0)
    intermediate_size: Int | None = Field(None, gt=0)
    context: Int | None = Field(None, gt=1, description="maximum positions")
    dropout: Float | None = Field(None, ge=0, lt=1, description="hidden and attention dropout")


class MaskingConfig(Strict):
    """MLM corruption: select a fraction of each row's ordinary tokens, then replace them."""

    select: Float = Field(0.15, gt=0, lt=1, description="fraction of ordinary tokens predicted")
    mask: Float = Field(0.8, ge=0, le=1, description="of the selected: replaced by [MASK]")
    random: Float = Field(0.1, ge=0, le=1, description="of the selected: a random token")

    @model_validator(mode="after")
    def _fractions(self) -> "MaskingConfig":
        if self.mask + self.random > 1 + 1e-9:
            raise ValueError("mask + random must not exceed 1 (the rest stay unchanged)")
        return self


class MixConfig(Strict):
    """Weights of the 'ce+cwt' objective: ce x cross-entropy (through the MLM head) + cwt x CWT."""

    ce: Float = Field(1.0, ge=0)
    cwt: Float = Field(1.0, ge=0)


class NCEConfig(Strict):
    """Noise-contrastive estimation through an untied output matrix (paper Table 6, row 3)."""

    negatives: Int = Field(1024, gt=0, description="noise samples shared by a micro-batch")
    noise: Literal["unigram", "uniform"] = Field(
        "unigram", description="noise distribution: training-token frequencies or uniform"
    )


class EncoderConfig(Strict):
    """Everything that defines one masked-LM run apart from its seed and budget."""

    model: EncoderModelConfig
    data: DataConfig
    masking: MaskingConfig = MaskingConfig()
    train: TrainConfig
    objective: Literal["softmax", "cwt", "ce+cwt", "nce"]
    head_positions: Literal["masked", "all"] = Field(
        "masked", description="where the MLM head (softmax, ce+cwt) computes vocabulary logits: "
        "the predicted positions only, or every position as BertForMaskedLM's forward (and the "
        "CWT paper's code) does; the loss is the same, the cost is not")
    cwt: CWTConfig = CWTConfig()
    mix: MixConfig = MixConfig()
    nce: NCEConfig = NCEConfig()

    def stages(self) -> list[str]:
        """Pretraining is the only stage the run budget pays for; GLUE fine-tuning is scored
        apart and its compute recorded on its own."""
        return ["pretrain"]
