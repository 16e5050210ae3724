"""Contrastive Weight Tying (Godey et al., ICLR 2024), the loss both text families train with,
and the softmax cross-entropy it is compared to.

CWT scores each predicted position's last hidden state o_i against the input embeddings e(x_j)
of the K targets of the micro-batch:

    L = -(1/K) sum_i log( exp(o_i . e(x_i) / tau) / sum_j exp(o_i . e(x_j) / tau) )

a cross-entropy over a K x K score matrix whose correct class is the diagonal. Repeated tokens
stay as separate columns, the targets are not detached, and the vocabulary is never touched.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def cwt_loss(
    hidden: Tensor,
    target_ids: Tensor,
    embedding: Tensor,
    *,
    temperature: float = 1.0,
    unique_negatives: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """Mean CWT loss of K positions: hidden [K, D], target_ids [K], embedding [V, D].

    unique_negatives (an ablation) keeps one column per distinct target token; the positive of
    row i is then the column of its own token. chunk_size bounds the score matrix held at once
    to chunk_size x K rows, with the same value and gradients as the full computation.
    """
    if hidden.ndim != 2 or target_ids.shape != hidden.shape[:1]:
        raise ValueError(
            f"cwt_loss expects hidden [K, D] and target_ids [K]; got {tuple(hidden.shape)} "
            f"and {tuple(target_ids.shape)}"
        )
    if unique_negatives:
        tokens, labels = torch.unique(target_ids, return_inverse=True)
    else:
        tokens, labels = target_ids, torch.arange(len(target_ids), device=target_ids.device)
    # A lookup, not a detach: E gets gradient as the target too. F.embedding, not E[tokens]:
    # indexing's backward on a CPU adds repeated rows with parallel atomics in no fixed order.
    candidates = F.embedding(tokens, embedding)
    if chunk_size is None or chunk_size >= len(hidden):
        scores = hidden @ candidates.T / temperature
        return F.cross_entropy(widen(scores), labels)
    return _ChunkedContrastiveCE.apply(hidden, candidates, labels, temperature, chunk_size)


class _ChunkedContrastiveCE(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ candidates^T / tau) against labels, row chunk by row chunk.

    Only the per-row maximum and log of the shifted sum (2K floats) are kept for backward, which
    recomputes each chunk's scores; so peak memory is chunk x N instead of K x N. Autocast in
    force during the forward is replayed in the backward, so the recomputed scores match the ones
    the forward normalised.

    The maximum and the log of the shifted sum stay apart: a score offset shared by a whole row
    (1e4 and more) would swallow the digits of their float32 sum, the log-sum-exp. Subtracting the
    maximum from scores as close to it as these is exact, so the softmax keeps the precision of
    the scores themselves, as the unchunked cross-entropy does.
    """

    @staticmethod
    def forward(
        ctx: Any,  # FunctionCtx: its stub declares none of the attributes stored on it
        hidden: Tensor,
        candidates: Tensor,
        labels: Tensor,
        temperature: float,
        chunk_size: int,
    ) -> Tensor:
        device_type = hidden.device.type
        ctx.autocast = (
            device_type,
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
        )
        rows = torch.arange(len(hidden), device=hidden.device)
        wide = _wide_dtype(hidden.dtype)
        row_max = hidden.new_empty(len(hidden), dtype=wide)
        log_sum = hidden.new_empty(len(hidden), dtype=wide)
        total = hidden.new_zeros((), dtype=wide)
        for start in range(0, len(hidden), chunk_size):
            span = slice(start, start + chunk_size)
            scores = _scores(hidden[span], candidates, temperature)
            row_max[span] = scores.amax(dim=1)
            shifted = scores.sub_(row_max[span, None])
            log_sum[span] = torch.logsumexp(shifted, dim=1)
            total += (log_sum[span] - shifted[rows[span] - start, labels[span]]).sum()
        ctx.save_for_backward(hidden, candidates, labels, row_max, log_sum)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return total / len(hidden)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        hidden, candidates, labels, row_max, log_sum = ctx.saved_tensors
        device_type, enabled, dtype = ctx.autocast
        tau, chunk_size = ctx.temperature, ctx.chunk_size
        wide = _wide_dtype(hidden.dtype)
        scale = grad_output.to(wide) / (len(hidden) * tau)
        rows = torch.arange(len(hidden), device=hidden.device)
        grad_hidden = torch.empty_like(hidden, dtype=wide)
        grad_candidates = torch.zeros_like(candidates, dtype=wide)
        with torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled):
            for start in range(0, len(hidden), chunk_size):
                span = slice(start, start + chunk_size)
                scores = _scores(hidden[span], candidates, tau)
                # d(lse - s_label)/ds = softmax - onehot; times dL/dscores' chain factor 1/(K tau)
                grad_scores = scores.sub_(row_max[span, None]).sub_(log_sum[span, None]).exp_()
                grad_scores[rows[span] - start, labels[span]] -= 1
                grad_scores *= scale
                grad_hidden[span] = grad_scores @ candidates.to(wide)
                grad_candidates += grad_scores.T @ hidden[span].to(wide)
        return grad_hidden.to(hidden.dtype), grad_candidates.to(candidates.dtype), None, None, None


def _scores(hidden: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """A chunk's score matrix in at least float32, computed alike in forward and backward."""
    return widen(hidden @ candidates.T) / temperature


def softmax_loss(logits: Tensor, target_ids: Tensor) -> Tensor:
    """Mean cross-entropy of logits [K, V] against target_ids [K], at least in float32."""
    return F.cross_entropy(widen(logits), target_ids)


def _wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself otherwise: softmax statistics need the range."""
    return torch.promote_types(dtype, torch.float32)


def widen(x: Tensor) -> Tensor:
    """x in at least float32, where losses and their softmax statistics are computed."""
    return x.to(_wide_dtype(x.dtype))
