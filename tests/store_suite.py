"""A small LM suite on generated text for the results-store tests: a run trains in seconds."""

from pathlib import Path

from textgen import write_lm_data

SUITE = """\
suite: store-e2e
family: lm
seeds: [0]
budget: {budget}
model: {{preset: micro}}
data:
  train: {data}/train.jsonl
  seq_len: 32
  tokenizer: {{train_bpe: 300}}
train:
  batch_size: 8
  optim: {{lr: 1.0e-2, warmup: 0.1}}
  checkpoint_every: 2
  validate_every: 5
  val_batches: 2
objective: softmax
evals:
  - lambada: {{path: {data}/cloze.jsonl, name: cloze_proxy, proxy: true, batch_size: 8}}
variants:
  softmax: {{}}
  cwt: {{objective: cwt, head: embedding_transpose}}
"""


def write_suite(root: Path, budget: str = "{flops: 2.0e+8}") -> Path:
    """The suite file under `root`, with its training text and cloze set beside it."""
    data = write_lm_data(root / "data")
    path = root / "suite.yaml"
    path.write_text(SUITE.format(budget=budget, data=data))
    return path
