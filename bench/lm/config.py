"""Validated configuration of one language-model run (no torch import: validation stays fast)."""

from typing import Literal

from pydantic import Field, model_validator

from bench.schema import Float, Int, OptimConfig, SafeName, Strict


class ModelConfig(Strict):
    """A GPTNeoX decoder: a named preset, optionally with some dimensions overridden."""

    preset: Literal["pythia-70m", "small", "tiny", "micro"]
    hidden_size: Int | None = Field(None, gt=0)
    num_layers: Int | None = Field(None, gt=0)
    num_heads: Int | None = Field(None, gt=0)
    intermediate_size: Int | None = Field(None, gt=0)
    context: Int | None = Field(None, gt=1, description="maximum positions")


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


class LambadaEvalConfig(Strict):
    """LAMBADA scored through lm-eval: a local JSON-lines file or an installed lm-eval task."""

    path: str | None = Field(None, description="JSON lines, one {'text': ...} per passage")
    task: SafeName | None = Field(None, description="an lm-eval task name, e.g. lambada_openai")
    name: SafeName = Field("lambada_local", description="task name given to a local file "
                           "(and the name of its task file)")
    proxy: bool = Field(False, description="the data is a stand-in, labelled so in reports")
    limit: Int | None = Field(None, gt=0)
    batch_size: Int = Field(16, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "LambadaEvalConfig":
        if (self.path is None) == (self.task is None):
            raise ValueError("give exactly one of 'path' (a local JSON-lines file) or 'task'")
        return self
