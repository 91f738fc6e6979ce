"""The drift test of the model's own sentence vectors: the maximum mean discrepancy between validation's and the
window's (a permutation p-value) and a domain classifier's held-out AUC, whose scores name the logged texts least like
the validation split (core/drift.py). It reads the rows that hold their texts (logged with --log_texts)."""

from __future__ import annotations

import logging
from typing import Dict, Optional

import numpy as np

from ...core import drift
from .base import FIGURES as f, DriftTest
from .window import Window, sample

logger = logging.getLogger(__name__)


def embeddings(window: Window) -> Optional[Dict]:
    """The embedding test on the window's rows that hold their texts (and second texts, for a model of text pairs;
    an embedding model encodes each text alone); the others (logged without --log_texts) are counted, and with fewer
    than min_rows such rows the test is skipped."""
    frame, val, out, min_rows = window.frame, window.validation, window.figures, window.options.min_rows
    pairs = val.pairs is not None and window.run.model.info().text_pair
    held = frame["text"].notna() & (frame["text_pair"].notna() if pairs else True)
    have, n = int(held.sum()), len(frame)
    if have < min_rows:
        held_what = ("no logged row in the window holds its text" if not have else
                     f"only {have} of the {n} logged rows in the window hold their texts (at least {min_rows} needed, --min_rows)")
        out["embeddings_skipped"] = f"{held_what}: start the server (or predict) with --log_texts for the embedding test"
        return None
    if have < n:
        out["embeddings_rows"] = (f"the embedding test ran on the {have} of {n} rows that hold their texts (the others "
                                  "were logged without --log_texts)")
        logger.info("%s", out["embeddings_rows"])
    return _vectors_test(window, frame[held].reset_index(drop=True), pairs)


def _vectors_test(window: Window, frame, read_pairs: bool) -> Optional[Dict]:
    val, out, most = window.validation, window.figures, window.options.max_rows
    predictor = window.predictor()
    ref = sample(len(val.texts), most, 1)
    cur = sample(len(frame), most, 2)
    pairs = frame["text_pair"].tolist() if read_pairs else None
    a = predictor.sentence_vectors([val.texts[i] for i in ref], [val.pairs[i] for i in ref] if pairs is not None else None)
    b = predictor.sentence_vectors([frame["text"][i] for i in cur], [pairs[i] for i in cur] if pairs is not None else None)
    if a is None or b is None:
        out["embeddings_skipped"] = "this model gives no sentence vectors here"
        return None
    test = drift.mmd(a, b, window.options.permutations)
    classifier = drift.domain_classifier(a, b)
    test["domain_auc"] = classifier["auc"]
    scores = classifier["current_scores"]
    if scores and scores[0] is not None:
        top = np.argsort(scores)[::-1][:10]
        out["least_like_training"] = [{"id": frame["id"][cur[i]], "text": frame["text"][cur[i]], "score": float(scores[i])} for i in top]
    test["rows"] = [len(ref), len(cur)]
    return test


def auc(name: str, test: Dict) -> str:
    return f"AUC {f.num(test.get('domain_auc'), f'tests.{name}.domain_auc', '.3f')}"


def least_like(figures: Dict, name: str) -> str:
    """The logged texts the domain classifier found least like the validation split."""
    least = figures.get("least_like_training") or []
    if not least:
        return ""
    return "<h2>Texts least like the validation split</h2>" + f.table(
        ["domain score", "id", "text"], [[f"{r['score']:.3f}", f.esc(r["id"]), f.esc(r["text"][:300])] for r in least], (1, 2))


EMBEDDINGS = DriftTest("embeddings", "sentence vectors (MMD, permutations; domain classifier AUC)", ("text", "sentence_vectors"),
                       embeddings, statistic="mmd2", effect=auc, figure=least_like, notes=("embeddings_skipped", "embeddings_rows"),
                       switch="embeddings")
