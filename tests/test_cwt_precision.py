"""CWT in float32 when every score of a row shares a large offset: the chunked loss must keep the
precision of the unchunked cross-entropy, in value and in both gradients."""

import pytest
import torch

from bench.text.cwt import cwt_loss

K, D, V = 40, 12, 64
TAU = 0.7

# Relative error float32 leaves in value and gradients at each offset (the unchunked path's own
# error is 10 to 30 times smaller); past 1e6 the scores' float32 spacing (0.06) exceeds it.
BOUND = {0.0: 1e-5, 1e2: 1e-5, 1e4: 1e-3, 1e6: 5e-2}


def offset_case(offset: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states, targets and a table in float32 whose scores o_i . e_j all carry `offset`:
    one extra dimension holding sqrt(offset) in every row of both matrices."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(K, D, generator=gen)
    table = torch.randn(V, D, generator=gen)
    targets = torch.randint(0, V, (K,), generator=gen)
    shift = offset**0.5
    hidden = torch.cat([hidden, torch.full((K, 1), shift)], dim=1)
    table = torch.cat([table, torch.full((V, 1), shift)], dim=1)
    return hidden, targets, table


def value_and_grads(hidden, targets, table, **kwargs) -> list[torch.Tensor]:
    """Loss and gradients of hidden and table, all as float64 for comparison."""
    hidden = hidden.clone().requires_grad_(True)
    table = table.clone().requires_grad_(True)
    loss = cwt_loss(hidden, targets, table, temperature=TAU, **kwargs)
    loss.backward()
    return [t.detach().double() for t in (loss, hidden.grad, table.grad)]


def relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    return [float((g - w).norm() / w.norm()) for g, w in zip(got, want, strict=True)]


@pytest.mark.parametrize("offset", sorted(BOUND))
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 8, 13, 39])
@pytest.mark.parametrize("unique_negatives", [False, True])
def test_value_and_gradients_match_float64_at_large_offsets(offset, chunk_size,
                                                            unique_negatives):
    hidden, targets, table = offset_case(offset)
    # the reference sees the very same float32 inputs, computed in float64
    reference = value_and_grads(hidden.double(), targets, table.double(),
                                unique_negatives=unique_negatives)
    got = value_and_grads(hidden, targets, table, unique_negatives=unique_negatives,
                          chunk_size=chunk_size)
    errors = relative_errors(got, reference)
    assert max(errors) < BOUND[offset], errors


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("chunk_size", [1, 7, 8, 13, 39])
def test_chunked_is_as_precise_as_unchunked(offset, chunk_size):
    """Chunk sizes that do and do not divide K lose no more gradient precision than the single
    cross-entropy. (The value's error is the scores' own rounding, which differs by chunk shape
    at the last bit; the bounds above cover it.)"""
    hidden, targets, table = offset_case(offset, seed=1)
    reference = value_and_grads(hidden.double(), targets, table.double())[1:]
    unchunked = relative_errors(value_and_grads(hidden, targets, table)[1:], reference)
    chunked = relative_errors(value_and_grads(hidden, targets, table, chunk_size=chunk_size)[1:],
                              reference)
    for got, floor in zip(chunked, unchunked, strict=True):
        assert got <= 3 * floor + 1e-6, (chunked, unchunked)


def test_offset_cancels_in_float64():
    """The offset is invisible to the exact objective: a check that the cases mean what they say."""
    plain = value_and_grads(*(t.double() if t.is_floating_point() else t
                              for t in offset_case(0.0)))
    shifted = value_and_grads(*(t.double() if t.is_floating_point() else t
                                for t in offset_case(1e4)), chunk_size=7)
    torch.testing.assert_close(shifted[0], plain[0], rtol=1e-9, atol=0)
    torch.testing.assert_close(shifted[1][:, :D], plain[1][:, :D], rtol=1e-7, atol=1e-12)
