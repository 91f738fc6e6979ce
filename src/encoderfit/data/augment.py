"""Label-free text variants for a distillation transfer set: the teacher labels them, so they need not keep the
label. Word-level EDA operations (Wei & Zou 2019: deletion, swap, insertion; insertion takes a word of another text
of the same source, as no thesaurus is at hand), span masking, and mixing two texts of the same source. Seeded: the
same texts, count and seed give the same variants."""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

RATE = 0.1  # EDA's alpha: the share of a text's words an operation touches
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _delete(words: List[str], rng, **_) -> List[str]:
    kept = [w for w in words if rng.random() >= RATE]
    return kept or [words[int(rng.integers(len(words)))]]


def _swap(words: List[str], rng, **_) -> List[str]:
    words = list(words)
    for _ in range(max(1, round(RATE * len(words)))):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    return words


def _insert(words: List[str], rng, vocabulary: Sequence[str], **_) -> List[str]:
    words = list(words)
    for _ in range(max(1, round(RATE * len(words)))):
        words.insert(int(rng.integers(len(words) + 1)), vocabulary[int(rng.integers(len(vocabulary)))])
    return words


def _mask(words: List[str], rng, mask_token: Optional[str], **_) -> List[str]:
    span = max(1, min(3, round(1.5 * RATE * len(words))))
    start = int(rng.integers(max(1, len(words) - span + 1)))
    filler = [mask_token] * span if mask_token else []
    return words[:start] + filler + words[start + span:] or words


def _mix(words: List[str], rng, other: str, **_) -> List[str]:
    """The first half of this text (by sentences when it has several, else by words) and the second half of another."""
    text = " ".join(words)
    mine, theirs = SENTENCE_END.split(text), SENTENCE_END.split(other)
    if len(mine) < 2:
        mine, theirs = words, other.split()
    first = mine[: max(1, len(mine) // 2)]
    second = theirs[len(theirs) // 2:] or theirs
    return " ".join(first + second).split()


OPERATIONS = {"delete": _delete, "swap": _swap, "insert": _insert, "mask": _mask, "mix": _mix}


def augment(texts: Sequence[str], per_text: int, seed: int, operations: Sequence[str] = tuple(OPERATIONS),
            mask_token: Optional[str] = None, exclude: Sequence[str] = ()) -> List[Tuple[int, str]]:
    """`per_text` variants of each text as (index of its text, variant), each made by one of `operations` drawn at
    random. A variant equal to any of `texts` or of `exclude` (validation and test texts) or to an earlier variant is
    dropped, so a text may get fewer; whitespace inside a variant is normalised to single spaces."""
    rng = np.random.default_rng(seed)
    vocabulary = sorted({w for t in texts for w in t.split()})
    banned = set(texts) | set(exclude)
    seen, out = set(), []
    for index, text in enumerate(texts):
        words = text.split()
        if not words:
            continue
        for _ in range(per_text):
            name = operations[int(rng.integers(len(operations)))]
            other = texts[int(rng.integers(len(texts)))]
            variant = " ".join(OPERATIONS[name](words, rng, vocabulary=vocabulary, mask_token=mask_token, other=other))
            if variant and variant not in banned and variant not in seen:
                seen.add(variant)
                out.append((index, variant))
    return out
