"""What one optimizer step of each causal-LM stage costs, priced on fake tensors from the model's
shapes (nothing is trained): the family's `step_costs`."""

import torch

from bench.contract import StepCost
from bench.lm.config import LMConfig
from bench.lm.model import build_model, freeze_for_probe, untie_head
from bench.lm.objectives import causal_lm_loss
from bench.text.data import vocab_size
from bench.training.distributed import World, local_part
from bench.training.flops import count_flops_abstract


def step_costs(config: LMConfig, processes: int = 1) -> dict[str, StepCost]:
    """Exact step costs from the model's shapes. `processes` only checks that the batch splits
    into their shares of whole micro-batches (an unset micro-batch is refused on several): the
    costs do not depend on it."""
    vocab = vocab_size(config.data.tokenizer)
    micro = config.train.micro_batch(processes)
    local_part(config.train.batch_size, current=World(0, processes), micro=micro)
    seq = config.data.seq_len
    costs: dict[str, StepCost] = {}

    def step(objective: str, finetune: bool) -> None:
        model = build_model(config.model, vocab, tied=config.objective == "cwt")
        if finetune:
            model = untie_head(model)
            freeze_for_probe(model, config)
        ids = torch.zeros((micro, seq), dtype=torch.long)
        causal_lm_loss(model, ids, objective, config.cwt).backward()

    per_micro = count_flops_abstract(lambda: step(config.objective, False))
    n_micro = config.train.batch_size // micro
    costs["pretrain"] = StepCost(per_micro * n_micro, config.train.batch_size * seq)
    if config.head == "finetune":
        ft_batch = config.head_finetune_batch()
        per_row = count_flops_abstract(lambda: step("softmax", True)) / micro
        costs["head_finetune"] = StepCost(per_row * ft_batch, ft_batch * seq)
    return costs
