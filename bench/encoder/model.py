"""BERT masked-LM encoders: presets, construction, and the parameters each objective trains.

The model is transformers' BertForMaskedLM (no next-sentence head), its decoder tied to the input
embeddings as in BERT. Objectives that never score the vocabulary through that head (cwt, nce) do
not train it and do not count it; NCE adds its own untied output matrix and bias.

`distilbert-multilingual` is distilbert-base-multilingual-cased's geometry (6 layers, hidden 768,
12 heads, FFN 3072, 512 positions; its tokenizer's 119,547 tokens) as a DistilBERT-style
BertForMaskedLM, not transformers' DistilBertForMaskedLM class: DistilBERT is BERT's layer stack
without segment embeddings or pooler, and BertForMaskedLM has no pooler, so one segment embedding
(type_vocab_size 1, 768 parameters, a learned bias every position shares) is the only difference.
Its encoder has 134,734,848 parameters where DistilBertModel has 134,734,080.
"""

from typing import Any, cast

from torch import nn
from transformers import BertConfig, BertForMaskedLM

from bench.encoder.config import EncoderModelConfig
from bench.errors import UserError

# Turc et al. (2019) sizes; bert-small is the CWT paper's ablation model (4 layers, hidden 512).
PRESETS: dict[str, dict[str, int]] = {
    "bert-base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
                  "intermediate_size": 3072},
    "distilbert-multilingual": {"num_hidden_layers": 6, "hidden_size": 768,
                                "num_attention_heads": 12, "intermediate_size": 3072,
                                "type_vocab_size": 1},
    "bert-small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8,
                   "intermediate_size": 2048},
    "bert-mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                  "intermediate_size": 1024},
    "bert-tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2,
                  "intermediate_size": 512},
}
_OVERRIDES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
              "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
              "context": "max_position_embeddings"}
# The objectives that score masked tokens through BERT's MLM head (transform + tied decoder).
USES_MLM_HEAD = ("softmax", "ce+cwt")


def bert_config(cfg: EncoderModelConfig, vocab_size: int, pad_token_id: int) -> BertConfig:
    """BertConfig of a preset with the config's overrides applied and checked."""
    kwargs: dict[str, Any] = {"max_position_embeddings": 512, **PRESETS[cfg.preset]}
    for field, key in _OVERRIDES.items():
        if getattr(cfg, field) is not None:
            kwargs[key] = getattr(cfg, field)
    if cfg.dropout is not None:
        kwargs |= {"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout}
    if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
        raise UserError(f"model: hidden_size {kwargs['hidden_size']} is not divisible by "
                        f"num_heads {kwargs['num_attention_heads']}")
    if vocab_size < 2:
        raise UserError(f"model: vocabulary size {vocab_size}; expected at least 2 tokens")
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, tie_word_embeddings=True,
                      **kwargs)


def build_encoder(cfg: EncoderModelConfig, vocab_size: int, pad_token_id: int,
                  objective: str) -> BertForMaskedLM:
    """A freshly initialised BertForMaskedLM; 'nce' gets an untied output matrix `nce_output`."""
    model = BertForMaskedLM(bert_config(cfg, vocab_size, pad_token_id))
    if model.cls.predictions.decoder.weight is not model.bert.embeddings.word_embeddings.weight:
        raise RuntimeError("BertForMaskedLM did not tie its decoder to the input embeddings")
    if objective == "nce":
        hidden = model.config.hidden_size
        model.nce_output = nn.Linear(hidden, vocab_size)
        nn.init.normal_(model.nce_output.weight, std=model.config.initializer_range)
        nn.init.zeros_(model.nce_output.bias)
    return model


def nce_output(model: BertForMaskedLM) -> nn.Linear:
    """NCE's output matrix, set on the model by `build_encoder`: read back through
    Module.__getattr__, whose declared type is Tensor | Module."""
    return cast(nn.Linear, model.nce_output)


def trained_parameters(model: BertForMaskedLM, objective: str) -> list[nn.Parameter]:
    """The parameters an objective updates: the encoder, plus the MLM head or NCE's matrix."""
    params = dict(model.bert.named_parameters())
    if objective in USES_MLM_HEAD:
        params |= {f"cls.{k}": p for k, p in model.cls.named_parameters()}
    if objective == "nce":
        params |= {f"nce.{k}": p for k, p in nce_output(model).named_parameters()}
    unique: dict[int, nn.Parameter] = {id(p): p for p in params.values()}  # the tie shares E
    return list(unique.values())


def count_parameters(model: BertForMaskedLM, objective: str) -> dict[str, int]:
    """Parameters by role, counting only what the objective trains (the paper's params column)."""
    trained = trained_parameters(model, objective)
    embedding = model.bert.embeddings.word_embeddings.weight.numel()
    output = nce_output(model).weight.numel() + nce_output(model).bias.numel() \
        if objective == "nce" else 0
    total = sum(p.numel() for p in trained)
    return {"total": total, "embedding": embedding, "output": output,
            "non_embedding": total - embedding - output}

