"""Which examples a training step sees: a pure function of (seed, step), so that a resumed run
sees exactly the batches an uninterrupted one sees, whatever the family."""

import hashlib

import torch


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The row order of one epoch: a permutation drawn from a generator seeded by (seed, epoch)."""
    mixed = hashlib.sha256(f"{seed}/{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(mixed[:8], "little") >> 1)
    return torch.randperm(n, generator=generator)


def batch_at(rows: torch.Tensor, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """The [batch_size, L] batch of optimizer step `step`, a pure function of (step, seed).

    Sample k of the whole run is row perm_e[k mod N] with e = k div N, so every epoch visits
    each row once and a batch that crosses an epoch boundary continues into the next epoch.
    """
    n = rows.shape[0]
    if n == 0 or step < 0 or batch_size <= 0:
        raise ValueError(f"batch_at needs rows, step >= 0, batch_size > 0 (got {n}, {step}, "
                         f"{batch_size})")
    position, stop = step * batch_size, (step + 1) * batch_size
    parts = []
    while position < stop:
        epoch, offset = divmod(position, n)
        take = min(n - offset, stop - position)
        parts.append(epoch_permutation(n, seed, epoch)[offset: offset + take])
        position += take
    return rows[torch.cat(parts)]
