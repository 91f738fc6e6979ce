"""The token-classification baseline: a linear-chain CRF on hand-made word features (the classic pre-neural NER
recipe: the word, its shape, affixes and neighbours), trained with sklearn-crfsuite's L-BFGS on the same split.
Its L1/L2 strengths are chosen on validation from a small grid. Its per-word marginal probabilities stand in for
logits, so the same metric functions score it. Without sklearn-crfsuite, the most frequent tag of each training word
(O for unseen words) is the baseline, and its name says so.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from typing import Dict, List

import numpy as np

from ..base.words import WordScores

log = logging.getLogger(__name__)
GRID = ((0.1, 0.1), (0.05, 0.01))  # (c1, c2): sklearn-crfsuite tutorial's setting and a lighter one
MAX_ITERATIONS = 100


def _shape(word: str) -> str:
    return re.sub(r"(.)\1+", r"\1", re.sub("[A-Z]", "X", re.sub("[a-z]", "x", re.sub("[0-9]", "d", word))))


def _word(word: str, prefix: str) -> Dict[str, object]:
    lower = word.lower()
    return {f"{prefix}lower": lower, f"{prefix}shape": _shape(word), f"{prefix}title": word.istitle(),
            f"{prefix}upper": word.isupper(), f"{prefix}digit": word.isdigit(), f"{prefix}suffix3": lower[-3:]}


def features(words: List[str]) -> List[Dict[str, object]]:
    out = []
    for i, word in enumerate(words):
        f = {"bias": 1.0, **_word(word, ""), "prefix2": word[:2], "suffix2": word[-2:], "len": min(len(word), 10)}
        f.update(_word(words[i - 1], "-1:") if i else {"BOS": True})
        f.update(_word(words[i + 1], "+1:") if i + 1 < len(words) else {"EOS": True})
        out.append(f)
    return out


def _words(ds) -> List[List[str]]:
    return [[text[a:b] for a, b in spans] for text, spans in zip(ds["text"], ds["words"])]


def _scores(ds, marginals: List[List[Dict[str, float]]], labels: List[str]) -> List[WordScores]:
    out = []
    for text, spans, rows in zip(ds["text"], ds["words"], marginals):
        probs = np.asarray([[row.get(tag, 0.0) for tag in labels] for row in rows], dtype=np.float64).reshape(len(spans), len(labels))
        out.append(WordScores(text, [tuple(s) for s in spans], np.log(np.clip(probs, 1e-7, 1.0)).astype(np.float32)))
    return out


def crf_baseline(splits, labels: List[str]) -> Dict:
    """{"model": its description, "logits": WordScores of the test split}."""
    from .metrics import counts, gold, predicted, prf

    data = {role: (_words(ds), [[labels[i] for i in row] for row in ds["labels"]]) for role, ds in splits.as_dict().items()}
    try:
        import sklearn_crfsuite
    except ImportError:
        return _frequent_tag(splits, labels, data)
    x = {role: [features(w) for w in words] for role, (words, _) in data.items()}
    best = None
    for c1, c2 in GRID:
        crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=MAX_ITERATIONS, all_possible_transitions=True)
        crf.fit(x["train"], data["train"][1])
        val = _scores(splits.validation, crf.predict_marginals(x["validation"]), labels)
        f1 = prf(counts([gold(r, labels) for r in splits.validation["labels"]], [predicted(s.logits, labels)[0] for s in val]))["f1"]
        log.info("CRF baseline c1=%g c2=%g: validation entity F1 %.4f", c1, c2, f1)
        if best is None or f1 > best[0]:
            best = (f1, c1, c2, crf)
    f1, c1, c2, crf = best
    return {"model": f"linear-chain CRF on word features (sklearn-crfsuite, c1={c1:g}, c2={c2:g} of {len(GRID)} chosen on validation)",
            "logits": _scores(splits.test, crf.predict_marginals(x["test"]), labels), "validation_f1": f1}


def _frequent_tag(splits, labels: List[str], data) -> Dict:
    seen: Dict[str, Counter] = defaultdict(Counter)
    for words, tags in zip(*data["train"]):
        for w, t in zip(words, tags):
            seen[w][t] += 1
    marginals = [[{seen[w].most_common(1)[0][0] if w in seen else "O": 1.0} for w in words] for words in data["test"][0]]
    log.warning("warning: sklearn-crfsuite is not installed; the baseline is each word's most frequent training tag")
    return {"model": "most frequent training tag of each word (sklearn-crfsuite not installed)",
            "logits": _scores(splits.test, marginals, labels)}
