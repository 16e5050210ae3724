"""GPT-NeoX causal decoders: presets, construction (tied or untied head), the head swap and
what the head fine-tuning trains.

A headless (CWT) model is built tied, so that scoring text with logits = hidden @ E^T needs no
extra weights; "Headless + FT" then swaps in an untied head initialised from E.
"""

from typing import Any

from torch import nn
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedModel

from bench.errors import UserError
from bench.lm.config import LMConfig, ModelConfig

_COMMON: dict[str, Any] = {
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "use_parallel_residual": True,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.02,
    # No dropout anywhere: Pythia trains without it, and CPU runs stay deterministic.
    "attention_dropout": 0.0,
    "hidden_dropout": 0.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "pythia-70m": {
        **_COMMON,
        "num_hidden_layers": 6,
        "hidden_size": 512,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
        "max_position_embeddings": 2048,
    },
    "small": {
        **_COMMON,
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "max_position_embeddings": 512,
    },
    "tiny": {
        **_COMMON,
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 4,
        "intermediate_size": 512,
        "max_position_embeddings": 256,
    },
    "micro": {
        **_COMMON,
        "num_hidden_layers": 1,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
}

# ModelConfig field -> GPTNeoXConfig keyword it overrides.
_OVERRIDES = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "context": "max_position_embeddings",
}


def model_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The GPTNeoXConfig keywords of a preset with the config's overrides applied and checked."""
    kwargs = dict(PRESETS[cfg.preset])
    for field, key in _OVERRIDES.items():
        value = getattr(cfg, field)
        if value is not None:
            kwargs[key] = value
    hidden, heads = kwargs["hidden_size"], kwargs["num_attention_heads"]
    if hidden % heads:
        raise UserError(
            f"model: hidden_size {hidden} is not divisible by num_heads {heads}; "
            "expected hidden_size = num_heads x head dimension"
        )
    rotary = int(hidden // heads * kwargs["rotary_pct"])
    if rotary < 2 or rotary % 2:
        raise UserError(
            f"model: head dimension {hidden // heads} gives {rotary} rotary dimensions "
            f"(rotary_pct {kwargs['rotary_pct']}); expected an even number >= 2: "
            "change hidden_size or num_heads"
        )
    return kwargs


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    tied: bool,
    *,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> GPTNeoXForCausalLM:
    """A freshly initialised decoder; tied=True makes the head the input embedding (logits = h E^T).

    bos/eos default to None rather than GPT-NeoX's 0/2, which would be wrong for other tokenizers.
    """
    if vocab_size < 2:
        raise UserError(f"model: vocabulary size {vocab_size}; expected at least 2 tokens")
    config = GPTNeoXConfig(
        **model_kwargs(cfg),
        vocab_size=vocab_size,
        tie_word_embeddings=tied,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    model = GPTNeoXForCausalLM(config)
    if tied != _head_is_embedding(model):
        raise RuntimeError(f"GPTNeoXForCausalLM(tie_word_embeddings={tied}) did not honour the tie")
    return model


def untie_head(model: GPTNeoXForCausalLM) -> GPTNeoXForCausalLM:
    """Give the model its own head, a copy of E, so fine-tuning it leaves the embedding apart.

    The result is an ordinary untied GPTNeoXForCausalLM: save_pretrained writes both matrices and
    from_pretrained restores them without re-tying.
    """
    embedding = model.gpt_neox.embed_in.weight
    head = nn.Linear(embedding.shape[1], embedding.shape[0], bias=False)
    head.weight = nn.Parameter(embedding.detach().clone())
    model.lm_head = head
    model.config.tie_word_embeddings = False
    # transformers caches the tie mapping at construction; recompute it from the updated config.
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    return model


def freeze_for_probe(model: GPTNeoXForCausalLM, config: LMConfig) -> None:
    """Head fine-tuning's 'probe' trains the new head only; 'full' trains every parameter."""
    assert config.head_finetune is not None  # LMConfig requires it of head 'finetune'
    if config.head_finetune.mode == "probe":
        model.requires_grad_(False)
        model.lm_head.weight.requires_grad_(True)


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Parameter counts by role, of any causal LM (a released one too); a tied head shares E's
    storage and counts 0."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields shared ones once
    embedding = sum(p.numel() for p in model.get_input_embeddings().parameters())
    head = 0 if _head_is_embedding(model) else sum(
        p.numel() for p in model.get_output_embeddings().parameters())
    return {
        "total": total,
        "embedding": embedding,
        "head": head,
        "non_embedding": total - embedding - head,
    }


def _head_is_embedding(model: PreTrainedModel) -> bool:
    """transformers ties by making both names refer to one Parameter, so identity is the test."""
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight
