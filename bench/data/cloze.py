"""LAMBADA-style cloze passages cut from running text (a proxy for LAMBADA, never LAMBADA itself).

A passage is a run of whole words starting at a sentence start whose last word, the target, ends
a clause and also occurs earlier in the passage, as most LAMBADA targets do: predicting it
rewards using the context rather than word frequency alone. Passages are written as
lambada_openai writes them: single-spaced, so `text.split(' ')[-1]` is the bare target.
"""

import random
import re
from collections.abc import Sequence

RULE = (
    "passages of {min_words}-{max_words} words starting at a sentence start; the last word (the "
    "target) ends a clause in the source, has its trailing punctuation removed, is a word of at "
    "least 3 letters outside a short list of function words, occurs verbatim earlier in the "
    "passage, and is not part of a stage direction, heading or speaker label"
)

# Closed-class words pass the earlier-occurrence rule trivially; excluding them keeps the proxy
# about using context rather than predicting the commonest words.
FUNCTION_WORDS = frozenset(
    {
        "the", "and", "for", "but", "nor", "yet", "with", "from", "into", "unto", "upon", "that",
        "this", "these", "those", "them", "they", "their", "him", "his", "her", "hers", "she",
        "you", "your", "thee", "thou", "thy", "thine", "our", "ours", "its", "was", "were", "are",
        "have", "hath", "had", "has", "shall", "will", "would", "should", "may", "might", "can",
        "could", "not", "all", "any", "one", "out", "off", "too", "then", "than", "there", "here",
        "what", "which", "who", "whom", "when", "where", "how", "why", "also", "art", "did", "does",
        "doth", "ever", "own",
    }
)

_TARGET = re.compile(r"([A-Za-z]+(?:'[A-Za-z]+)*)[.,;:!?]+")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_SENTENCE_END = re.compile(r"[.!?]['\")\]]*$")
_SPEAKER = re.compile(r"(?:[A-Z][\w']*\.?\s+){0,3}[A-Z][\w']*\.")


def _tokens(text: str) -> tuple[list[str], list[bool]]:
    """The text's whitespace-separated words and whether each may serve as a target.

    Stage directions ([...]), upper-case or "Scene" headings and speaker labels of plays are
    context, never targets: guessing a speaker's name from the layout is not comprehension.
    """
    words: list[str] = []
    allowed: list[bool] = []
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        structural = (
            stripped.isupper()
            or stripped.startswith(("Scene ", "SCENE "))
            or _SPEAKER.fullmatch(stripped) is not None
        )
        for word in stripped.split():
            in_direction = depth > 0 or "[" in word or "]" in word
            depth = max(0, depth + word.count("[") - word.count("]"))
            words.append(word)
            allowed.append(not (structural or in_direction))
    return words, allowed


def target_of(word: str) -> str | None:
    """The bare target a source word gives when it ends a passage, or None if it cannot."""
    match = _TARGET.fullmatch(word)
    if match is None:
        return None
    target = match.group(1)
    if len(target) < 3 or target.lower() in FUNCTION_WORDS:
        return None
    return target


def cut_cloze_passages(
    text: str, seed: str, min_words: int = 40, max_words: int = 120
) -> list[str]:
    """Consecutive, non-overlapping cloze passages of one work, in reading order.

    Each passage aims at a length drawn from a generator seeded by `seed` (so lengths vary
    but the cut is reproducible) and ends at the qualifying target nearest that length.
    """
    words, allowed = _tokens(text)
    starts = [
        k for k in range(len(words))
        if allowed[k] and (k == 0 or _SENTENCE_END.search(words[k - 1]) is not None)
    ]
    rng = random.Random(seed)
    passages: list[str] = []
    next_free = 0
    for start in starts:
        if start < next_free:
            continue
        goal = rng.randint(min_words, max_words)
        seen: set[str] = set()
        best: tuple[int, int, str] | None = None
        for end in range(start, min(start + max_words, len(words))):
            length = end - start + 1
            target = target_of(words[end]) if allowed[end] and length >= min_words else None
            if target is not None and target in seen:
                distance = abs(length - goal)
                if best is None or distance < best[0]:
                    best = (distance, end, target)
            seen.update(_WORD.findall(words[end]))
        if best is None:
            continue
        _, end, target = best
        passages.append(" ".join([*words[start:end], target]))
        next_free = end + 1
    return passages


def select_evenly(items: Sequence[str], count: int) -> list[str]:
    """`count` items spread evenly over the sequence (all of them if there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[(k * len(items)) // count] for k in range(count)]
