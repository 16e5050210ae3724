"""What one optimizer step of masked-LM pretraining costs, priced on fake tensors from the
model's shapes (nothing is trained): the family's `step_costs`."""

import torch

from bench.contract import StepCost
from bench.encoder.config import EncoderConfig
from bench.encoder.masking import MaskedBatch, predicted_per_row
from bench.encoder.model import build_encoder
from bench.encoder.objectives import mlm_loss
from bench.text.data import vocab_size
from bench.training.distributed import World, local_part
from bench.training.flops import count_flops_abstract


def step_costs(config: EncoderConfig, processes: int = 1) -> dict[str, StepCost]:
    """Exact step costs from the model's shapes. `processes` only checks that the batch splits
    into their shares of whole micro-batches (an unset micro-batch is refused on several): the
    costs do not depend on it."""
    vocab = vocab_size(config.data.tokenizer, layout="mlm")
    micro = config.train.micro_batch(processes)
    local_part(config.train.batch_size, current=World(0, processes), micro=micro)
    seq = config.data.seq_len
    per_row = predicted_per_row(seq, config.masking)

    def step() -> None:
        model = build_encoder(config.model, vocab, 0, config.objective)
        positions = (torch.arange(micro)[:, None] * seq + 1 + torch.arange(per_row)).flatten()
        batch = MaskedBatch(torch.zeros((micro, seq), dtype=torch.long), positions,
                            torch.zeros(len(positions), dtype=torch.long))
        log_noise = torch.full((vocab,), -float(torch.log(torch.tensor(float(vocab)))))
        mlm_loss(model, batch, config, log_noise).backward()

    n_micro = config.train.batch_size // micro
    return {"pretrain": StepCost(count_flops_abstract(step) * n_micro,
                                 config.train.batch_size * seq)}
