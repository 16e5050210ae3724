"""Small English-like texts for tests: a corpus to train on and cloze passages to score."""

import json
import random
from pathlib import Path
from typing import Any

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


def byte_bpe(corpus: list[str], vocab_size: int = 320) -> Any:
    """A byte-level BPE trained on `corpus`, as a Hugging Face fast tokenizer (end of text:
    `<|endoftext|>`), the kind a GPT-style checkpoint ships."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")


def write_word_sst2(glue: Path) -> Path:
    """A GLUE SST-2 folder (`glue/SST-2`) whose label is whether a sentence says 'good': a task
    any classifier that reads words learns at once."""
    (glue / "SST-2").mkdir(parents=True, exist_ok=True)
    words = ["film", "plot", "cast", "score", "pace"]
    for split, n in (("train", 40), ("dev", 20)):
        lines = ["sentence\tlabel"] + [
            f"the {words[i % 5]} was {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(n)]
        (glue / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return glue
