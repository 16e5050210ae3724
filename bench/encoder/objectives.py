"""Masked-LM objectives of a BERT encoder, all on the K predicted positions of a micro-batch.

- softmax: cross-entropy over the vocabulary through BERT's MLM head (transform + tied decoder).
- cwt: Contrastive Weight Tying on the final hidden states (no head, no projection) against the
  input embeddings of the K targets, as the paper's MLM code does (`hidden_states[-1][mask]`).
- ce+cwt: ce x softmax + cwt x CWT, the paper's Table 6 mix (its code sums the two, weight 1 each).
- nce: noise-contrastive estimation (Mnih and Teh 2012) through an untied output matrix and bias:
  each position tells its target from `negatives` noise tokens shared by the micro-batch, drawn
  from the noise distribution q (with replacement), with the logit s - log(k q(w)).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import BertForMaskedLM

from bench.encoder.config import EncoderConfig
from bench.encoder.masking import MaskedBatch
from bench.encoder.model import nce_output
from bench.text.cwt import cwt_loss, softmax_loss, widen


def encode(model: BertForMaskedLM, batch: MaskedBatch) -> tuple[Tensor, Tensor]:
    """Final hidden states of every position [B, L, D] and of the predicted ones [K, D] (rows
    are full: no attention mask)."""
    hidden = model.bert(batch.inputs).last_hidden_state
    return hidden, hidden.reshape(-1, hidden.shape[-1])[batch.positions]


def head_loss(model: BertForMaskedLM, hidden: Tensor, predicted: Tensor, batch: MaskedBatch,
              positions: str) -> Tensor:
    """Cross-entropy through the MLM head; positions 'all' scores every position first, as
    BertForMaskedLM's forward does, then keeps the predicted ones (same value, more FLOPs)."""
    if positions == "all":
        logits = model.cls(hidden)
        return softmax_loss(logits.reshape(-1, logits.shape[-1])[batch.positions], batch.targets)
    return softmax_loss(model.cls(predicted), batch.targets)


def nce_loss(hidden: Tensor, targets: Tensor, output: torch.nn.Linear, log_noise: Tensor,
             negatives: int) -> Tensor:
    """Mean NCE loss of K positions; `log_noise` [V] is log q (-inf where q is 0)."""
    noise = torch.multinomial(log_noise.exp(), negatives, replacement=True)
    log_k = math.log(negatives)
    positive = (hidden * F.embedding(targets, output.weight)).sum(-1) + output.bias[targets]
    negative = hidden @ F.embedding(noise, output.weight).T + output.bias[noise]
    positive = widen(positive) - (log_k + log_noise[targets])
    negative = widen(negative) - (log_k + log_noise[noise])
    return (F.softplus(-positive) + F.softplus(negative).sum(-1)).mean()


def mlm_loss(model: BertForMaskedLM, batch: MaskedBatch, cfg: EncoderConfig,
             log_noise: Tensor | None = None) -> Tensor:
    """The run's objective on one masked micro-batch."""
    return objective_loss(model, *encode(model, batch), batch, cfg, log_noise)


def objective_loss(model: BertForMaskedLM, hidden: Tensor, predicted: Tensor,
                   batch: MaskedBatch, cfg: EncoderConfig, log_noise: Tensor | None) -> Tensor:
    """The run's objective from an encoded micro-batch (see `encode`)."""
    embedding = model.bert.embeddings.word_embeddings.weight

    def cwt() -> Tensor:
        return cwt_loss(predicted, batch.targets, embedding, temperature=cfg.cwt.temperature,
                        unique_negatives=cfg.cwt.unique_negatives,
                        chunk_size=cfg.cwt.chunk_size)

    def ce() -> Tensor:
        return head_loss(model, hidden, predicted, batch, cfg.head_positions)

    if cfg.objective == "softmax":
        return ce()
    if cfg.objective == "cwt":
        return cwt()
    if cfg.objective == "ce+cwt":
        return cfg.mix.ce * ce() + cfg.mix.cwt * cwt()
    if log_noise is None:
        raise ValueError("objective 'nce' needs the noise distribution")
    return nce_loss(predicted, batch.targets, nce_output(model), log_noise, cfg.nce.negatives)


def scoring_logits(model: BertForMaskedLM, hidden: Tensor, objective: str) -> Tensor:
    """Vocabulary logits of a model as its objective would score tokens: the MLM head, E^T for
    a headless model, or NCE's own output layer."""
    if objective == "cwt":
        return hidden @ model.bert.embeddings.word_embeddings.weight.T
    if objective == "nce":
        return nce_output(model)(hidden)
    return model.cls(hidden)


@torch.no_grad()
def validation_scores(model: BertForMaskedLM, batch: MaskedBatch, cfg: EncoderConfig,
                      log_noise: Tensor | None) -> dict[str, float]:
    """From one encoding of a held-out batch: the objective's loss, and the masked-token NLL
    (nats) and top-1 accuracy through the scoring head, which compare across objectives."""
    hidden, predicted = encode(model, batch)
    loss = objective_loss(model, hidden, predicted, batch, cfg, log_noise)
    logits = widen(scoring_logits(model, predicted, cfg.objective))
    return {"loss": float(loss), "mlm_nll": float(F.cross_entropy(logits, batch.targets)),
            "mlm_acc": float((logits.argmax(-1) == batch.targets).float().mean())}
