"""Extractive QA scoring: the official SQuAD v1.1/v2.0 answer normalisation, exact match and token F1 (maximum over
the reference answers), per-question scores for intervals and paired tests, and the sliding-window baseline.

The normaliser is the official evaluation script's (lower case; punctuation, the articles a/an/the and extra
whitespace removed); an unanswerable question (no reference answer) scores 1 only for the empty answer, as in the
v2.0 script. Written here once rather than through the `evaluate` library, whose SQuAD metrics download their
script from the hub at run time (unreachable offline).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)
QUESTION_WORDS = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how many", "how much", "how")
WORD = re.compile(r"\w+", re.UNICODE)
STOP = frozenset("a an the of in on at to for by with from and or is are was were be been it its this that these those as "
                 "do does did what which who whom whose when where why how many much".split())


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    predicted, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not predicted or not true:  # the v2.0 script: an empty answer matches only an empty one
        return float(predicted == true)
    common = sum((Counter(predicted) & Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, answers: Sequence[str]) -> Tuple[float, float]:
    """(EM, F1) of one prediction against a question's reference answers (none: unanswerable, "" is right)."""
    references = [a for a in answers if normalize_answer(a)] or [""]
    return max(exact_match(prediction, a) for a in references), max(token_f1(prediction, a) for a in references)


def per_question(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> Dict[str, np.ndarray]:
    """Arrays over questions: em, f1 (in [0, 1]) and has_answer (bool)."""
    scored = [score(p, a) for p, a in zip(predictions, answers)]
    return {"em": np.asarray([s[0] for s in scored], dtype=float), "f1": np.asarray([s[1] for s in scored], dtype=float),
            "has_answer": np.asarray([any(normalize_answer(x) for x in a) for a in answers], dtype=bool)}


def summary(rows: Dict[str, np.ndarray], idx: Optional[np.ndarray] = None) -> Dict[str, float]:
    """EM and F1 in percent (as SQuAD reports them) over the questions `idx` (default all), with HasAns/NoAns parts
    when both kinds are present."""
    idx = np.arange(len(rows["em"])) if idx is None else np.asarray(idx)
    out = {"exact_match": 100 * float(rows["em"][idx].mean()) if len(idx) else math.nan,
           "f1": 100 * float(rows["f1"][idx].mean()) if len(idx) else math.nan, "n": int(len(idx))}
    has = rows["has_answer"][idx]
    if has.any() and not has.all():
        for name, part in (("HasAns", idx[has]), ("NoAns", idx[~has])):
            out[f"{name}_exact"] = 100 * float(rows["em"][part].mean())
            out[f"{name}_f1"] = 100 * float(rows["f1"][part].mean())
            out[f"{name}_total"] = int(len(part))
    return out


def question_word(question: str) -> str:
    """The question's wh-word (what, who, how many, ...), or "other"."""
    text = " " + " ".join(WORD.findall(question.lower())) + " "
    found = [(text.find(f" {w} "), w) for w in QUESTION_WORDS if f" {w} " in text]
    return min(found, key=lambda f: (f[0], -len(f[1])))[1] if found else "other"  # "how many" before "how"


def best_null_threshold(margins: np.ndarray, rows: Dict[str, np.ndarray], answer_f1: np.ndarray) -> Tuple[float, float]:
    """The margin (best span score minus no-answer score) above which the span is given, chosen to maximise mean F1
    (the v2.0 script's best_f1_thresh): a question scores `answer_f1` when answered, 1 if unanswerable and unanswered.
    Returns (threshold, F1 at it, in [0, 1])."""
    null_f1 = (~rows["has_answer"]).astype(float)
    order = np.argsort(-margins)
    # answering the k questions with the largest margins: F1 = sum(answer_f1 of those) + sum(null_f1 of the rest)
    gains = np.concatenate([[0.0], np.cumsum(answer_f1[order] - null_f1[order])])
    k = int(np.argmax(gains))
    total = (null_f1.sum() + gains[k]) / max(len(margins), 1)
    if k == 0:
        return float(margins.max() + 1.0) if len(margins) else 0.0, float(total)
    if k == len(margins):
        return float(margins.min() - 1.0), float(total)
    return float((margins[order[k - 1]] + margins[order[k]]) / 2), float(total)


# ---------------------------------------------------------------- the sliding-window baseline

def _words(text: str) -> List[Tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in WORD.finditer(text)]


def sliding_window(question: str, context: str, max_words: int = 4, window: int = 8) -> Tuple[float, int, int]:
    """The SQuAD paper's sliding-window baseline (Rajpurkar et al. 2016, after Richardson et al. 2013): every span of
    up to `max_words` context words that repeats no question word is scored by the question words found within
    `window` words on each side, each weighted by log(1 + 1/count in the context) (rare words count more) and by
    1/distance to the span (the nearest matter most). Returns (score, start char, end char) of the best span."""
    words = _words(context)
    if not words:
        return 0.0, 0, 0
    asked = {w for w, _, _ in _words(question)} - STOP
    counts = Counter(w for w, _, _ in words)
    weight = np.asarray([math.log1p(1.0 / counts[w]) if w in asked else 0.0 for w, _, _ in words])
    n, decay = len(words), 1.0 / np.arange(1, window + 1)
    padded = np.concatenate([np.zeros(window), weight, np.zeros(window)])
    # left[i]: question words just before word i; right[j]: just after word j - 1 (the span's last word)
    left = np.asarray([padded[i : i + window][::-1] @ decay for i in range(n + 1)])
    right = np.asarray([padded[window + j : window + j + window] @ decay for j in range(n + 1)])
    bad = np.asarray([w in asked for w, _, _ in words]) | np.asarray([w in STOP for w, _, _ in words])
    best = (-1.0, 0, 1)
    for length in range(1, min(max_words, n) + 1):
        starts = np.arange(n - length + 1)
        blocked = np.asarray([np.asarray([w in asked for w, _, _ in words[i : i + length]]).any() for i in starts])
        blocked |= np.asarray([bad[i : i + length].all() for i in starts])
        values = np.where(blocked, -1.0, left[starts] + right[starts + length])
        i = int(np.argmax(values))
        if values[i] > best[0]:
            best = (float(values[i]), i, i + length)
    value, i, j = best
    return max(value, 0.0), words[i][1], words[j - 1][2]
