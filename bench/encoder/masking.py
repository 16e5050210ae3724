"""MLM corruption of packed rows, a pure function of (rows, seed, step) so resumed runs match.

Selection follows the CWT paper's code (electra-pytorch's `get_mask_subset_with_prob`): a row
predicts ceil(select x n) of its ordinary tokens ([CLS], [SEP] and [PAD] are never selected), chosen
uniformly without replacement. One choice differs: n is the row's length minus its [CLS] and final
[SEP] (L - 2), not its own count of ordinary tokens, which is smaller by one for each document
boundary ([SEP]) inside the row. So K, the number of predicted positions of a micro-batch, is the
same at every step, and so are a step's FLOPs (CWT scores K x K pairs) and the budget's horizon.
The selected tokens are then corrupted as in BERT: `mask` of them become [MASK], `random` of them a
uniformly drawn ordinary token, the rest stay as they are. Targets are always the original tokens.
"""

import hashlib
import math
from typing import NamedTuple

import torch
from torch import Tensor

from bench.encoder.config import MaskingConfig


class MaskedBatch(NamedTuple):
    """One micro-batch: corrupted inputs [B, L], the predicted positions as flat indices into
    the B x L grid [K] (row-major), and the original tokens there [K]. A tuple of tensors, so the
    training loop measures FLOPs per distinct shape."""

    inputs: Tensor
    positions: Tensor
    targets: Tensor

    def to(self, device: torch.device) -> "MaskedBatch":
        from bench.training.loading import to_device

        return MaskedBatch(*(to_device(t, device) for t in self))

    def split(self, size: int) -> list["MaskedBatch"]:
        """Micro-batches of `size` rows; each keeps the predicted positions of its own rows."""
        length = self.inputs.shape[1]
        row = self.positions // length
        out = []
        for start in range(0, self.inputs.shape[0], size):
            keep = (row >= start) & (row < start + size)
            out.append(MaskedBatch(self.inputs[start: start + size],
                                   self.positions[keep] - start * length, self.targets[keep]))
        return out


class Vocabulary(NamedTuple):
    """What corruption needs to know about the tokenizer."""

    size: int
    mask_id: int
    special_ids: tuple[int, ...]  # never selected, never drawn as a random replacement

    def ordinary_ids(self) -> Tensor:
        keep = torch.ones(self.size, dtype=torch.bool)
        keep[list(self.special_ids)] = False
        return keep.nonzero().squeeze(1)


def predicted_per_row(length: int, cfg: MaskingConfig) -> int:
    """Positions a row of `length` tokens predicts: ceil(select x (length - 2))."""
    return math.ceil(cfg.select * (length - 2) - 1e-9)


def step_generator(seed: int, step: int, salt: str = "mask") -> torch.Generator:
    """A CPU generator seeded by (salt, seed, step): masks do not depend on the global RNG."""
    mixed = hashlib.sha256(f"{salt}/{seed}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(mixed[:8], "little") >> 1)


def mask_rows(rows: Tensor, vocab: Vocabulary, cfg: MaskingConfig,
              generator: torch.Generator) -> MaskedBatch:
    """Corrupt CPU rows [B, L] for masked-LM training."""
    if rows.ndim != 2 or rows.shape[1] < 3:
        raise ValueError(f"mask_rows expects rows [B, L] with L >= 3; got {tuple(rows.shape)}")
    special = torch.isin(rows, torch.tensor(vocab.special_ids, dtype=rows.dtype))
    count = torch.clamp((~special).sum(1), max=predicted_per_row(rows.shape[1], cfg))
    # Random keys, special positions last; the `count` smallest keys of a row are its selection.
    keys = torch.rand(rows.shape, generator=generator).masked_fill(special, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    positions = (rank < count[:, None]).flatten().nonzero().squeeze(1)
    targets = rows.flatten()[positions]
    action = torch.rand(targets.shape, generator=generator)
    to_mask = action < cfg.mask
    to_random = (action >= cfg.mask) & (action < cfg.mask + cfg.random)
    pool = vocab.ordinary_ids()
    draws = pool[torch.randint(len(pool), targets.shape, generator=generator)].to(rows.dtype)
    replaced = torch.where(to_mask, vocab.mask_id, torch.where(to_random, draws, targets))
    inputs = rows.flatten().clone()
    inputs[positions] = replaced
    return MaskedBatch(inputs.view_as(rows), positions, targets)
