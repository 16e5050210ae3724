"""Validated configuration blocks shared by the text families: the corpus and tokenizer,
the pretraining stage's batch and optimiser, and CWT (no torch import)."""

from typing import Literal

from pydantic import Field, model_validator

from bench.schema import Float, Int, OptimConfig, Strict


class TokenizerConfig(Strict):
    """A local tokenizer directory, or a byte-level BPE trained on the corpus and cached."""

    path: str | None = None
    train_bpe: Int | None = Field(None, gt=256, description="vocabulary size of a BPE to train")

    @model_validator(mode="after")
    def _exactly_one(self) -> "TokenizerConfig":
        if (self.path is None) == (self.train_bpe is None):
            raise ValueError("give exactly one of 'path' (a tokenizer directory) or 'train_bpe'")
        return self


class DataConfig(Strict):
    """Pretraining text, tokenized and packed into full-length rows."""

    train: str = Field(description="text file, JSON-lines file, or a saved Hugging Face dataset")
    format: Literal["auto", "text", "jsonl", "hf"] = "auto"
    text_field: str = "text"
    val: str | None = Field(None, description="held-out text; default: a slice of 'train'")
    val_fraction: Float = Field(0.02, gt=0, lt=0.5)
    seq_len: Int = Field(gt=1)
    tokenizer: TokenizerConfig


class TrainConfig(Strict):
    """The pretraining stage: batch geometry, optimiser, bookkeeping."""

    batch_size: Int = Field(gt=0, description="sequences per optimizer step")
    micro_batch_size: Int | None = Field(
        None, gt=0, description="sequences per forward pass (CWT negatives come from one)"
    )
    optim: OptimConfig
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a GPU, fp32 on a CPU"
    )
    compile: bool = Field(False, description="run the loss through torch.compile (FLOPs are "
                          "still counted on an eager step)")
    checkpoint_every: Int = Field(50, gt=0)
    validate_every: Int = Field(50, gt=0)
    val_batches: Int = Field(4, gt=0)

    @model_validator(mode="after")
    def _micro_divides(self) -> "TrainConfig":
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        return self


class CWTConfig(Strict):
    """Contrastive Weight Tying options; the defaults are the paper's."""

    temperature: Float = Field(1.0, gt=0)
    unique_negatives: bool = Field(False, description="ablation: deduplicate repeated targets")
    chunk_size: Int | None = Field(
        4096, gt=0, description="rows of the K x K score matrix computed at once; null: all"
    )
