"""Small English-like texts for tests: a corpus to train on and cloze passages to score."""

import json
import random
from pathlib import Path

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = ["market", "river", "garden", "station", "library"]


def narrative_passages(n: int, seed: int) -> list[str]:
    """Narrative-like passages: some end in a fixed word, some repeat an earlier name, so a
    briefly trained model gets part of the targets right and part wrong."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(NAMES, 2)
        place = rng.choice(PLACES)
        if i % 2:
            out.append(f"{a} went to the {place} with {b} and after a long day they went home")
        else:
            out.append(f"{a} met {b} at the {place} and the {place} was quiet so {b} waved at {a}")
    return out


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def write_lm_data(data: Path, n_train: int = 600, n_cloze: int = 40) -> Path:
    """`data/train.jsonl` and a cloze set `data/cloze.jsonl` for the tiny LM suites; `data`."""
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", narrative_passages(n_train, seed=1))
    write_jsonl(data / "cloze.jsonl", narrative_passages(n_cloze, seed=2))
    return data


# The small LM suite end-to-end tests extend (`extends:`), naming their data and changes.
TINY_LM = Path(__file__).with_name("tiny_lm.yaml")


def lm_suite(name: str, train: str | Path, tokenizer: str = "{train_bpe: 300}", data: str = "",
             variants: str = "") -> str:
    """A tiny LM suite on the corpus `train` (two steps of the micro preset, seq_len 16), its
    variant `softmax` and the variant lines `variants`; `data` is added to its data block."""
    return f"""\
suite: {name}
family: lm
seeds: [0]
budget: {{steps: 2}}
model: {{preset: micro}}
data: {{train: {train}, seq_len: 16, tokenizer: {tokenizer}{data}}}
train: {{batch_size: 4, optim: {{lr: 1.0e-3}}}}
objective: softmax
variants:
  softmax: {{}}
{variants}"""
