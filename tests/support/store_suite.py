"""A small LM suite on generated text for the results-store tests: a run trains in seconds."""

from pathlib import Path

from support.textgen import TINY_LM, write_lm_data

SUITE = """\
extends: {base}
suite: store-e2e
budget: {budget}
data: {{train: {data}/train.jsonl}}
train: {{checkpoint_every: 2}}
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
    path.write_text(SUITE.format(base=TINY_LM, budget=budget, data=data))
    return path
