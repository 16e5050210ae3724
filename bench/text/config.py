"""Validated configuration blocks shared by the text families: the corpus and tokenizer,
the pretraining stage's batch and training-loop settings, and CWT (no torch import)."""

from typing import Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from bench.errors import UserError
from bench.schema import Float, InputPath, Int, LoopConfig, Strict, check_name

# XLM-R's language-sampling exponent (Conneau et al. 2020, "Unsupervised Cross-lingual
# Representation Learning at Scale", section 3); XLM used 0.5 (Conneau & Lample 2019), mBERT 0.7.
DEFAULT_ALPHA = 0.3


class TokenizerConfig(Strict):
    """A local tokenizer directory, or a byte-level BPE trained on the corpus and cached."""

    path: InputPath | None = None
    train_bpe: Int | None = Field(None, gt=256, description="vocabulary size of a BPE to train")

    @model_validator(mode="after")
    def _exactly_one(self) -> "TokenizerConfig":
        if (self.path is None) == (self.train_bpe is None):
            raise ValueError("give exactly one of 'path' (a tokenizer directory) or 'train_bpe'")
        return self


class SamplingConfig(Strict):
    """How a multilingual corpus shares each batch between its languages: exponent-smoothed
    token shares (q_i = p_i^alpha / sum_j p_j^alpha, p_i the language's share of training
    tokens), or explicit weights (normalised)."""

    alpha: Float | None = Field(None, ge=0, le=1, description="1: token shares; 0: uniform")
    weights: dict[str, Float] | None = Field(None, description="language -> weight (> 0)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "SamplingConfig":
        if (self.alpha is None) == (self.weights is None):
            raise ValueError("give exactly one of 'alpha' (smoothed token shares) or 'weights'")
        for language, weight in (self.weights or {}).items():
            if weight <= 0:
                raise ValueError(f"weights.{language}: {weight}; expected a weight above 0")
        return self


class DataConfig(Strict):
    """Pretraining text, tokenized and packed into full-length rows.

    `train` may be a folder with one corpus per language (`<lang>.jsonl`, `<lang>.txt` or a
    saved dataset `<lang>/`): a multilingual corpus (see bench/text/languages.py)."""

    train: InputPath = Field(description="text file, JSON-lines file, a saved Hugging Face "
                             "dataset, or a folder with one of these per language")
    format: Literal["auto", "text", "jsonl", "hf"] = "auto"
    text_field: str = "text"
    val: InputPath | None = Field(None, description="held-out text; default: a slice of 'train'")
    val_fraction: Float = Field(0.02, gt=0, lt=0.5)
    seq_len: Int = Field(gt=1)
    tokenizer: TokenizerConfig
    languages: list[str] | None = Field(
        None, description="a multilingual corpus's languages, in this order (default: all)")
    sampling: SamplingConfig | None = Field(
        None, description=f"language sampling of a multilingual corpus (default: alpha "
        f"{DEFAULT_ALPHA}, as XLM-R)")

    @model_validator(mode="after")
    def _languages(self) -> "DataConfig":
        for language in self.languages or []:
            check_name(language, "language")
        if self.languages is not None and not self.languages:
            raise ValueError("languages: an empty list; list at least one language or omit it")
        if self.languages and len(set(self.languages)) < len(self.languages):
            raise ValueError(f"languages: {self.languages} lists a language twice")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """The multilingual keys are dumped only when set, so the resolved configs (and run ids)
        of single-corpus suites are what they were before those keys existed."""
        data: dict[str, object] = handler(self)
        for key in ("languages", "sampling"):
            if getattr(self, key) is None:
                data.pop(key, None)
        return data


class TextBatchConfig(Strict):
    """The pretraining stage's batch geometry: rows per optimizer step and per forward pass."""

    batch_size: Int = Field(gt=0, description="sequences per optimizer step")
    micro_batch_size: Int | None = Field(
        None, gt=0, description="sequences per forward pass (CWT negatives come from one)"
    )

    @model_validator(mode="after")
    def _micro_divides(self) -> "TextBatchConfig":
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError("micro_batch_size must divide batch_size")
        return self

    def micro_batch(self, processes: int) -> int:
        """Rows one process runs through at once when `processes` train together.

        Unset, it is the whole batch, which only a process training alone runs at once: on
        several, a process's share would become its micro-batch, and what a run trains (CWT's
        in-batch negatives, every micro-batch's random draws) would depend on the number of
        processes while the run's id does not. That is refused: the config says it."""
        if self.micro_batch_size is not None:
            return self.micro_batch_size
        if processes > 1:
            share = self.batch_size // processes
            raise UserError(
                f"train.micro_batch_size is unset, so each of {processes} processes would run "
                f"its share of the batch ({share} rows) at once: CWT's negatives and the random "
                "draws of every micro-batch would differ from a run on one process under the "
                "same run id; set train.micro_batch_size (rows per forward pass, e.g. "
                f"{share}) and the run trains the same on any number of processes")
        return self.batch_size


# pydantic lays out fields from the last base to the class itself: a resolved config lists the
# batch geometry, then the loop settings, then validation, in the order stored runs' configs do.
class TrainConfig(LoopConfig, TextBatchConfig):
    """The pretraining stage: batch geometry, the training loop's settings, validation."""

    validate_every: Int = Field(50, gt=0)
    val_batches: Int = Field(4, gt=0)


class CWTConfig(Strict):
    """Contrastive Weight Tying options; the defaults are the paper's."""

    temperature: Float = Field(1.0, gt=0)
    unique_negatives: bool = Field(False, description="ablation: deduplicate repeated targets")
    chunk_size: Int | None = Field(
        4096, gt=0, description="rows of the K x K score matrix computed at once; null: all"
    )
