"""Words and sub-words, for tasks that label each word (token classification).

A word is a character span of the original text. Data in token lists keeps its tokens as the words (joined by one
space); raw text (span-annotated data, and everything predicted) is cut by `split_words`: runs of letters/digits,
and each other visible character alone. The model reads the raw text through its own tokenizer, with character
offsets, so training and inference tokenize identically (no `is_split_into_words`, no `add_prefix_space`): each
sub-word belongs to the word holding its first visible character, and a word's prediction is its first sub-word's.
Texts longer than max_length are cut into overlapping windows; a word seen in two windows gets the mean of its
first sub-word's logits in both, so every word of any length of text is tagged exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

WORD = re.compile(r"\w+|[^\w\s]")
Span = Tuple[int, int]
IGNORE = -100


@dataclass
class WordScores:
    """One text's words (character spans) and the model's logits for each, shape (n_words, n_tags)."""

    text: str
    words: List[Span]
    logits: Any


def split_words(text: str) -> List[Span]:
    return [m.span() for m in WORD.finditer(text)]


def join_tokens(tokens: Sequence[str]) -> Tuple[str, List[Span]]:
    """Token list -> (the tokens joined by single spaces, each token's span in that text)."""
    spans, at = [], 0
    for token in tokens:
        spans.append((at, at + len(token)))
        at += len(token) + 1
    return " ".join(tokens), spans


def word_of_char(text_length: int, words: Sequence[Span]):
    """Per character, the index of the word holding it (-1 between words)."""
    import numpy as np

    index = np.full(text_length + 1, -1, dtype=np.int64)
    for w, (start, end) in enumerate(words):
        index[start:end] = w
    return index


def token_words(offsets: Sequence[Span], char_word, words: Sequence[Span]) -> Tuple[List[int], List[List[int]]]:
    """Per sub-word (from its character offsets): the word it belongs to (that of its first visible character, or of
    the word a lone space piece precedes; -1 for special tokens), and the words it begins: the words predicted from
    it (one, or none for a word's later pieces; two where the tokenizer joins what split_words separates)."""
    owners, started, begun = [], [], set()
    for start, end in offsets:
        owner, begins = -1, []
        for c in range(start, end):
            w = int(char_word[c])
            if w >= 0:
                owner = w if owner < 0 else owner
                if words[w][0] == c and w not in begun:  # the first such sub-word (byte pieces can share a character)
                    begins.append(w)
                    begun.add(w)
        if owner < 0 < end - start and end < len(char_word) and char_word[end] >= 0 and words[char_word[end]][0] == end:
            owner = int(char_word[end])  # a lone space piece (byte-level BPE's "Ġ") opens the word right after it
            if owner not in begun:
                begins.append(owner)
                begun.add(owner)
        owners.append(owner)
        started.append(begins)
    return owners, started


def encode_windows(tokenizer, texts: Sequence[str], max_length: int, overlap: int):
    """Every window of max_length sub-words (`overlap` shared between neighbours) with character offsets and
    `overflow_to_sample_mapping`, never padded."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, stride=overlap, return_overflowing_tokens=True,
                     return_offsets_mapping=True)


def aligned_windows(tokenizer, texts: Sequence[str], words: Sequence[Sequence[Span]], tags: Sequence[Sequence[int]],
                    max_length: int, overlap: int, subwords: str, continuation: Dict[int, int],
                    soft: Optional[Sequence[Any]] = None) -> Dict[str, list]:
    """Training rows: each window's ids and per-sub-word labels: its word's tag on the first sub-word, and on the
    others IGNORE (`subwords` "first") or the tag's continuation (B-X -> I-X; `subwords` "all"). With `soft` (per
    text, a teacher's logits per word, (n_words, n_tags)), also `teacher`: per sub-word, its word's teacher logits on
    the word's first sub-word and NaN elsewhere, so each word of a window is taught once whatever the tokenizer; and
    `source`, each window's text."""
    enc = encode_windows(tokenizer, texts, max_length, overlap)
    source = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    cache: Dict[int, Any] = {}
    labels, teacher = [], []
    for w, text_index in enumerate(source):
        if text_index not in cache:
            cache = {text_index: word_of_char(len(texts[text_index]), words[text_index])}
        owners, started = token_words(offsets[w], cache[text_index], words[text_index])
        row, taught = [], []
        for owner, begins in zip(owners, started):
            first = owner >= 0 and owner in begins
            if owner < 0:
                row.append(IGNORE)
            elif first:
                row.append(tags[text_index][owner])
            else:
                row.append(IGNORE if subwords == "first" else continuation[tags[text_index][owner]])
            if soft is not None:
                width = len(soft[text_index][0]) if len(soft[text_index]) else 0
                taught.append(list(soft[text_index][owner]) if first else [float("nan")] * width)
        labels.append(row)
        teacher.append(taught)
    enc["labels"] = labels
    if soft is not None:
        enc["teacher"], enc["source"] = teacher, list(source)
    enc["length"] = [len(ids) for ids in enc["input_ids"]]
    return dict(enc)


def word_logits(predictor, texts: Sequence[str], words: Optional[Sequence[Sequence[Span]]] = None) -> List[WordScores]:
    """Each text's per-word logits from the predictor's model (length-batched windows; int8 near-ties re-run in fp32
    when the predictor has a re-check)."""
    import numpy as np
    import torch

    if not len(texts):
        return []
    words = [split_words(t) for t in texts] if words is None else [list(map(tuple, w)) for w in words]
    overlap = (predictor.info.windows or {}).get("overlap", 0)
    with torch.inference_mode():
        enc = encode_windows(predictor.tokenizer, texts, predictor.max_length, overlap)
        source = np.asarray(enc.pop("overflow_to_sample_mapping"), dtype=np.int64)
        offsets = enc.pop("offset_mapping")
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = [len(ids) for ids in enc["input_ids"]]
        tokens: List[Any] = [None] * len(lengths)
        predictor.run_tokens(predictor.model, enc, keys, lengths, range(len(lengths)), tokens)
        scores = _per_word(texts, words, source, offsets, tokens)
        if predictor.recheck is not None:
            exact, margin = predictor.recheck
            close = np.flatnonzero(predictor.task.decoding.decision_margin(scores, predictor.head) < margin)
            if len(close):
                again = np.flatnonzero(np.isin(source, close))
                predictor.run_tokens(exact, enc, keys, lengths, again, tokens)
                scores = _per_word(texts, words, source, offsets, tokens)
    return scores


def _per_word(texts, words, source, offsets, tokens) -> List[WordScores]:
    """Window token logits -> per text, each word's mean first-sub-word logits over the windows that hold it (a word
    no sub-word starts, e.g. characters the tokenizer drops, gets zeros: the first tag, O)."""
    import numpy as np

    n_tags = tokens[0].shape[1] if tokens else 0
    sums = [np.zeros((len(w), n_tags), dtype=np.float32) for w in words]
    counts = [np.zeros(len(w), dtype=np.float32) for w in words]
    char_word: Dict[int, Any] = {}
    for w, text_index in enumerate(source):
        if text_index not in char_word:
            char_word = {text_index: word_of_char(len(texts[text_index]), words[text_index])}
        for position, begins in enumerate(token_words(offsets[w], char_word[text_index], words[text_index])[1]):
            for owner in begins:
                sums[text_index][owner] += tokens[w][position]
                counts[text_index][owner] += 1
    return [WordScores(text, list(w), s / np.maximum(c, 1)[:, None]) for text, w, s, c in zip(texts, words, sums, counts)]
