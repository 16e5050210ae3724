"""Multilingual corpora: one corpus per language in a folder, and how a batch is shared out.

A `train` folder holds `<lang>.jsonl`, `<lang>.txt` or a saved Hugging Face dataset `<lang>/`
per language (hidden entries and other files are ignored; a language's name is checked as a
`languages:` entry is); a folder that is itself a saved dataset stays one corpus. Each language
is tokenized into its own shards with one shared tokenizer directory (a trained BPE would need
the languages mixed before tokenizing: refused).

Each language gets a sampling weight q_i: exponent-smoothed token shares
q_i = p_i^alpha / sum_j p_j^alpha (p_i its share of the training tokens; alpha 1 keeps the shares,
0 makes them uniform; default 0.3 as XLM-R), or explicit weights, normalised. A global batch of B
rows takes a fixed quota of each language: B q_i rounded by largest remainder (Hamilton's
method: floors, then the leftover rows to the largest fractional parts, ties to the earlier
language). A language whose quota rounds to 0 is refused, naming the batch size that gives it a
row, rather than silently never sampled.
"""

import functools
import hashlib
import math
from pathlib import Path

from bench.contract import RunContext
from bench.errors import UserError
from bench.schema import check_name
from bench.text.config import DEFAULT_ALPHA, DataConfig

CORPUS_SUFFIXES = (".jsonl", ".txt")
# What datasets.save_to_disk writes at the top of a Dataset / DatasetDict folder.
SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")


def is_multilingual(cfg: DataConfig) -> bool:
    """Whether `train` is a folder of per-language corpora (not a file, not a saved dataset)."""
    folder = Path(cfg.train)
    found = folder.is_dir() and not any((folder / f).is_file() for f in SAVED_DATASET_FILES)
    if not found and (cfg.languages is not None or cfg.sampling is not None):
        raise UserError(f"{cfg.train}: data.languages and data.sampling need a folder with one "
                        "corpus per language; this is one corpus")
    return found


def language_files(folder: str) -> dict[str, str]:
    """Language -> its corpus in `folder`, in name order; each name checked as a `languages:`
    entry is (it names metrics and files)."""
    found: dict[str, str] = {}
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix in CORPUS_SUFFIXES:
            language = _language_name(entry)
            if language in found:
                raise UserError(f"{folder}: language '{language}' has two corpora "
                                f"({Path(found[language]).name}, {entry.name}); keep one")
            found[language] = str(entry)
    return found


def _language_name(entry: Path) -> str:
    """The language a corpus file (its stem) or saved dataset (its name) holds."""
    language = entry.name if entry.is_dir() else entry.stem
    try:
        return check_name(language, "language")
    except ValueError as error:
        raise UserError(f"{entry}: {error}; rename it, or move it out of the folder of "
                        "languages") from None


def _chosen(cfg: DataConfig, folder: str, found: dict[str, str]) -> dict[str, str]:
    """The config's languages (all found, by default) -> their files; a listed language with
    no corpus is an error naming the folder."""
    if not found:
        raise UserError(f"{folder}: no language corpora; expected <lang>.jsonl, <lang>.txt "
                        "or a saved dataset <lang>/ per language")
    names = cfg.languages or list(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(f"{folder}: no corpus for language(s) {', '.join(missing)} (expected "
                        f"<lang>.jsonl, <lang>.txt or <lang>/; found: {', '.join(found)})")
    return {n: found[n] for n in names}


def language_configs(cfg: DataConfig) -> dict[str, DataConfig]:
    """Language -> a one-corpus DataConfig of it (and of its `val` file when `val` is a folder):
    each builds exactly the shards a suite naming that file alone would."""
    if cfg.tokenizer.path is None:
        raise UserError(f"{cfg.train}: a multilingual corpus needs one vocabulary for every "
                        "language: give data.tokenizer.path (a tokenizer directory), not "
                        "train_bpe")
    train = _chosen(cfg, cfg.train, language_files(cfg.train))
    val: dict[str, str | None] = dict.fromkeys(train)
    if cfg.val is not None:
        if not Path(cfg.val).is_dir():
            raise UserError(f"{cfg.val}: data.train is a folder of languages, so 'val' must be "
                            "a folder with the same languages")
        val |= _chosen(cfg.model_copy(update={"languages": list(train)}), cfg.val,
                       language_files(cfg.val))
    _check_weights(cfg, list(train))
    return {language: cfg.model_copy(update={"train": path, "val": val[language],
                                             "languages": None, "sampling": None})
            for language, path in train.items()}


def _check_weights(cfg: DataConfig, languages: list[str]) -> None:
    """Explicit weights name exactly the languages trained on."""
    weights = cfg.sampling.weights if cfg.sampling else None
    if weights is None:
        return
    unknown = [n for n in weights if n not in languages]
    if unknown:
        raise UserError(f"{cfg.train}: data.sampling.weights names {', '.join(unknown)}, not "
                        f"among the languages trained on ({', '.join(languages)})")
    missing = [n for n in languages if n not in weights]
    if missing:
        raise UserError(f"{cfg.train}: data.sampling.weights gives no weight to "
                        f"{', '.join(missing)}; weight every language or restrict 'languages'")


def language_weights(cfg: DataConfig, tokens: dict[str, int]) -> dict[str, float]:
    """q_i per language, summing to 1: explicit weights normalised, else smoothed token shares."""
    if cfg.sampling is not None and cfg.sampling.weights is not None:
        raw = {n: cfg.sampling.weights[n] for n in tokens}
    else:
        alpha = DEFAULT_ALPHA if cfg.sampling is None or cfg.sampling.alpha is None \
            else cfg.sampling.alpha
        total = sum(tokens.values())
        raw = {n: (t / total) ** alpha for n, t in tokens.items()}
    norm = sum(raw.values())
    return {n: w / norm for n, w in raw.items()}


def language_quotas(weights: dict[str, float], batch_size: int) -> dict[str, int]:
    """Rows of each language in a batch of `batch_size`: largest remainder of batch_size x q_i.

    Refuses a language left without a row, naming the smallest batch size that gives every
    language one."""
    exact = {n: batch_size * w for n, w in weights.items()}
    quotas = {n: math.floor(x) for n, x in exact.items()}
    order = sorted(weights, key=lambda n: -(exact[n] - quotas[n]))  # stable: ties keep order
    for n in order[: batch_size - sum(quotas.values())]:
        quotas[n] += 1
    empty = [n for n, q in quotas.items() if q == 0]
    if empty:
        smallest = math.ceil(1 / min(weights.values()) - 1e-9)
        raise UserError(
            f"data.sampling: language(s) {', '.join(empty)} get weight "
            f"{', '.join(f'{weights[n]:.4f}' for n in empty)}, less than one row of a batch of "
            f"{batch_size}; use a batch_size of at least {smallest}, a smaller alpha (more "
            "uniform) or a larger weight, or leave the language out of 'languages'")
    return quotas


@functools.cache  # asked for every language at every step
def language_seed(seed: int, language: str) -> int:
    """The seed of a language's epoch permutations: its own order, a function of (seed, name)."""
    digest = hashlib.sha256(f"{seed}/{language}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def record_sampling(ctx: RunContext, languages: dict[str, dict[str, float]]) -> None:
    """A multilingual corpus's realised sampling (tokens, weight, rows per batch of each
    language) goes into the run's provenance and log."""
    if not languages:
        return
    ctx.provenance["data.languages"] = languages
    for name, entry in languages.items():
        ctx.log.info("language %s: %d training tokens, weight %.4f, %d rows per batch", name,
                     entry["tokens"], entry["weight"], entry["rows_per_batch"])
