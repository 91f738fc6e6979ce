"""The baseline beside the model: TF-IDF word 1-2-grams + logistic regression, C chosen on validation.

It takes seconds and shows what the transformer adds over a bag of words.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from .metrics import classification_metrics

log = logging.getLogger(__name__)
C_GRID = (0.1, 1.0, 10.0, 100.0)


def _join(texts: Sequence[str], pairs: Sequence[str] | None) -> list[str]:
    return list(texts) if pairs is None else [f"{a} [SEP] {b}" for a, b in zip(texts, pairs)]


def tfidf_baseline(splits, labels: list[str]) -> Dict:
    """Fit on train, choose C by validation macro-F1, return test predictions and the choice made."""
    started = time.time()
    pair = "text_pair" in splits.train.column_names
    text = {role: _join(ds["text"], ds["text_pair"] if pair else None) for role, ds in splits.as_dict().items()}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(text["train"]) >= 1000 else 1, sublinear_tf=True)
    x = {role: (vectorizer.fit_transform if role == "train" else vectorizer.transform)(t) for role, t in text.items()}
    y = {role: np.asarray(ds["labels"]) for role, ds in splits.as_dict().items()}
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"])
        f1 = f1_score(y["validation"], clf.predict(x["validation"]), average="macro")
        if best is None or f1 > best[0]:
            best = (f1, c, clf)
    f1, c, clf = best
    result = classification_metrics(y["test"], clf.predict(x["test"]), labels)
    result.update({"model": "tfidf-1-2gram + logistic regression", "C": c, "validation_f1_macro": float(f1),
                   "seconds": round(time.time() - started, 2)})
    log.info("baseline (TF-IDF + LR, C=%g): test accuracy %.4f, macro-F1 %.4f", c, result["accuracy"], result["f1_macro"])
    return result
