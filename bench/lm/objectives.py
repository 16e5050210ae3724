"""Training objectives of a causal decoder: softmax cross-entropy and Contrastive Weight Tying
(the losses themselves are in bench.text.cwt) on next-token prediction."""

import torch
from torch import Tensor
from transformers import GPTNeoXForCausalLM

from bench.errors import UserError
from bench.text.config import CWTConfig
from bench.text.cwt import cwt_loss, softmax_loss

OBJECTIVES = ("softmax", "cwt")


def causal_lm_loss(
    model: GPTNeoXForCausalLM, input_ids: Tensor, objective: str, cwt: CWTConfig
) -> Tensor:
    """Loss of one packed micro-batch [B, L]: positions 0..L-2 predict tokens 1..L-1.

    softmax scores the whole vocabulary through the model's head; cwt contrasts the final
    (layer-normed) hidden states with the input embeddings of the micro-batch's targets and
    never evaluates the head.
    """
    hidden, targets = _predictions_and_targets(model, input_ids)
    if objective == "softmax":
        return softmax_loss(model.lm_head(hidden), targets)
    if objective == "cwt":
        return cwt_loss(
            hidden,
            targets,
            model.gpt_neox.embed_in.weight,
            temperature=cwt.temperature,
            unique_negatives=cwt.unique_negatives,
            chunk_size=cwt.chunk_size,
        )
    raise UserError(f"objective: got {objective!r}; expected one of {', '.join(OBJECTIVES)}")


@torch.no_grad()
def next_token_nll(model: GPTNeoXForCausalLM, input_ids: Tensor) -> Tensor:
    """Next-token NLL through the scoring head (E^T when tied), comparable across objectives."""
    hidden, targets = _predictions_and_targets(model, input_ids)
    return softmax_loss(model.lm_head(hidden), targets)


def _predictions_and_targets(model: GPTNeoXForCausalLM, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Final hidden states of positions 0..L-2 as [K, D] and their next tokens as [K]."""
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"expected packed rows [B, L] with L >= 2; got {tuple(input_ids.shape)}")
    hidden = model.gpt_neox(input_ids, use_cache=False).last_hidden_state[:, :-1]
    return hidden.reshape(-1, hidden.shape[-1]), input_ids[:, 1:].reshape(-1)


