"""Which examples a training step sees: a pure function of (seed, step), so that a resumed run
sees exactly the batches an uninterrupted one sees, whatever the family.

An epoch's order is a keyed permutation of [0, N) evaluated one index at a time (a Feistel network
on the smallest even number of bits that covers N, walking cycles until the value falls inside
[0, N)), so the batch of step k costs O(batch size) whatever N is: no permutation of all N rows
is ever built, which at hundreds of millions of rows would not fit a step.

torch is imported only by the functions that take or make tensors: tokenizing worker processes
import this module (through `bench.text.shards`) and need none of it.
"""

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_ROUNDS = 6
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def epoch_permutation(n: int, seed: int, epoch: int) -> "torch.Tensor":
    """The row order of one epoch: a permutation drawn from a generator seeded by (seed, epoch)."""
    import torch

    mixed = hashlib.sha256(f"{seed}/{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(mixed[:8], "little") >> 1)
    return torch.randperm(n, generator=generator)


@lru_cache(maxsize=64)
def _round_keys(seed: int, epoch: int) -> tuple[np.uint64, ...]:
    """Independent 64-bit round keys from sha256(seed, epoch, round)."""
    return tuple(
        np.uint64(int.from_bytes(hashlib.sha256(f"{seed}/{epoch}/{r}".encode()).digest()[:8],
                                 "little"))
        for r in range(_ROUNDS))


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64's finaliser of x ^ key: every output bit depends on every input bit."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def _feistel(x: np.ndarray, half_bits: int, keys: tuple[np.uint64, ...]) -> np.ndarray:
    """A bijection of [0, 4^half_bits): balanced Feistel rounds on the two halves of x."""
    mask = np.uint64((1 << half_bits) - 1)
    left, right = x >> np.uint64(half_bits), x & mask
    for key in keys:
        left, right = right, left ^ (_mix(right, key) & mask)
    return (left << np.uint64(half_bits)) | right


def permute(offsets: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """perm_(seed, epoch)(offsets) for offsets in [0, n): a bijection of [0, n), O(1) per index.

    Cycle-walking keeps the Feistel bijection of the covering domain (at most 4n values) inside
    [0, n); each walk takes under 4 steps on average."""
    if n == 1:
        return np.zeros(len(offsets), dtype=np.int64)
    half_bits = max(1, ((n - 1).bit_length() + 1) // 2)
    keys = _round_keys(seed, epoch)
    out = _feistel(offsets.astype(np.uint64), half_bits, keys)
    outside = out >= np.uint64(n)
    while outside.any():
        out[outside] = _feistel(out[outside], half_bits, keys)
        outside = out >= np.uint64(n)
    return out.astype(np.int64)


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """The global row indices [batch_size] of optimizer step `step`, a pure function of
    (n, step, batch_size, seed).

    Sample k of the whole run is row perm_e(k mod n) with e = k div n, so every epoch visits
    each row once and a batch that crosses an epoch boundary continues into the next epoch.
    """
    if n <= 0 or step < 0 or batch_size <= 0:
        raise ValueError(f"batch_indices needs rows, step >= 0, batch_size > 0 (got {n}, "
                         f"{step}, {batch_size})")
    samples = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(samples, n)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        out[here] = permute(offsets[here], n, seed, int(epoch))
    return out


def batch_at(rows: "torch.Tensor", step: int, batch_size: int, seed: int) -> "torch.Tensor":
    """The rows of `rows` (held in memory) that step `step` trains on, by `batch_indices`."""
    import torch

    return rows[torch.from_numpy(batch_indices(rows.shape[0], step, batch_size, seed))]
