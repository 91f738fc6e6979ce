"""Entity-level evaluation of token classification: seqeval's strict precision/recall/F1 per type and micro, token
accuracy, the kinds of entity errors, a type confusion matrix, the calibration of entity confidences and the most
confident mistakes. Predicted tags are read the lenient way (an orphan I- starts an entity, see tags.py) and written
back as valid IOB2, so the metrics score exactly the entities `encoderfit predict` returns.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tags import Entity, entities, to_iob2

ERROR_KINDS = ("correct", "wrong type", "wrong boundary", "wrong type and boundary", "missed", "spurious")
MISSED, SPURIOUS = "(missed)", "(spurious)"
ECE_BINS = 10


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def predicted(logits: np.ndarray, labels: List[str], temperature: float = 1.0) -> Tuple[List[Entity], List[float]]:
    """One text's entities from its word logits, each with its score: the mean over its words of the probability of
    the tag given (as the pipelines' "simple" aggregation scores them), at the head's temperature (which changes the
    scores, never the entities)."""
    if len(logits) == 0:
        return [], []
    probs = softmax(np.asarray(logits) / temperature)
    ids = probs.argmax(-1)
    found, _ = entities([labels[i] for i in ids], "iob2")
    top = probs[np.arange(len(ids)), ids]
    return found, [float(top[a:b].mean()) for _, a, b in found]


def gold(tag_ids: Sequence[int], labels: List[str]) -> List[Entity]:
    return entities([labels[i] for i in tag_ids], "iob2")[0]


def counts(true: List[List[Entity]], pred: List[List[Entity]]) -> np.ndarray:
    """Per row: (exactly right entities, predicted, true)."""
    return np.asarray([(len(set(t) & set(p)), len(p), len(t)) for t, p in zip(true, pred)], dtype=np.int64).reshape(-1, 3)


def prf(c: np.ndarray) -> Dict[str, float]:
    tp, npred, ntrue = c.sum(0) if c.ndim == 2 else c
    p = tp / npred if npred else 0.0
    r = tp / ntrue if ntrue else 0.0
    return {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0}


def error_kinds(true: List[Entity], pred: List[Entity]) -> Tuple[Counter, Counter]:
    """(kinds of outcome, (true type, predicted type) pairs) of one row: each true entity is correct, of the wrong type
    (same words), the wrong boundary (overlapping, same type), wrong in both, or missed; each predicted entity
    overlapping no true one is spurious."""
    kinds, pairs = Counter(), Counter()
    overlaps = lambda a, b: a[1] < b[2] and b[1] < a[2]  # noqa: E731
    for t in true:
        hits = [p for p in pred if overlaps(t, p)]
        same = next((p for p in hits if p[1:] == t[1:]), None)
        if same is not None:
            kinds["correct" if same[0] == t[0] else "wrong type"] += 1
            pairs[(t[0], same[0])] += 1
        elif hits:
            kinds["wrong boundary" if any(p[0] == t[0] for p in hits) else "wrong type and boundary"] += 1
            pairs[(t[0], hits[0][0])] += 1
        else:
            kinds["missed"] += 1
            pairs[(t[0], MISSED)] += 1
    for p in pred:
        if not any(overlaps(t, p) for t in true):
            kinds["spurious"] += 1
            pairs[(SPURIOUS, p[0])] += 1
    return kinds, pairs


def confidence_calibration(scores: np.ndarray, correct: np.ndarray) -> Dict:
    """How far entity scores are from the share of entities that are exactly right: ECE and reliability bins."""
    edges = np.linspace(0, 1, ECE_BINS + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (scores > lo) & (scores <= hi) if lo > 0 else (scores >= lo) & (scores <= hi)
        if inside.any():
            conf, acc = float(scores[inside].mean()), float(correct[inside].mean())
            ece += inside.mean() * abs(conf - acc)
            bins.append({"lo": float(lo), "hi": float(hi), "confidence": conf, "accuracy": acc, "count": int(inside.sum())})
    return {"ece": float(ece), "entities": int(len(scores)), "reliability": bins}


def marked(text: str, words, entity: Entity, label: Optional[str] = None) -> str:
    """The text with one entity marked as [[words|TYPE]]."""
    kind, a, b = entity
    start, end = words[a][0], words[b - 1][1]
    return f"{text[:start]}[[{text[start:end]}|{label or kind}]]{text[end:]}"


def scored_entities(true_ids: List[Sequence[int]], scores: list, labels: List[str], temperature: float = 1.0):
    """Every predicted entity's score and whether it is exactly a true one, over a split (for calibration)."""
    conf, right = [], []
    for row, s in zip(true_ids, scores):
        found, c = predicted(s.logits, labels, temperature)
        true = set(gold(row, labels))
        conf += c
        right += [e in true for e in found]
    return np.asarray(conf, dtype=np.float64), np.asarray(right, dtype=np.float64)


def fit_entity_temperature(true_ids: List[Sequence[int]], scores: list, labels: List[str], folds: int = 5) -> Dict:
    """Temperature scaling of the entity scores (Guo et al. 2017), fitted on validation against what is measured:
    whether each predicted entity is exactly right (binary NLL of its score). As for the other tasks' heads, it is
    kept only when it lowers the NLL of held-out folds, else T = 1."""
    from scipy.optimize import minimize_scalar
    from sklearn.model_selection import KFold

    def bce(rows, t):
        p, y = scored_entities([true_ids[i] for i in rows], [scores[i] for i in rows], labels, t)
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()), len(p)

    def fit(rows):
        found = minimize_scalar(lambda log_t: bce(rows, float(np.exp(log_t)))[0], bounds=(np.log(0.05), np.log(20.0)),
                                method="bounded", options={"xatol": 1e-3})
        return float(np.exp(found.x))

    every = np.arange(len(true_ids))
    k = max(2, min(folds, len(every)))
    scaled = unscaled = n = 0.0
    for train, held in KFold(k, shuffle=True, random_state=0).split(every):
        a, m = bce(held, fit(train))
        scaled, unscaled, n = scaled + a, unscaled + bce(held, 1.0)[0], n + m
    helps = scaled < unscaled
    return {"temperature": fit(every) if helps else 1.0, "cv_folds": k, "cv_nll_scaled": scaled / max(n, 1),
            "cv_nll_unscaled": unscaled / max(n, 1),
            "decision": "scaled: it lowered held-out NLL" if helps else "T = 1: scaling did not lower held-out NLL"}


def entity_metrics(true_ids: List[Sequence[int]], scores: list, labels: List[str], max_examples: int = 20,
                   temperature: float = 1.0) -> Dict:
    """Every metric of one split: `scores` are tokens.WordScores (text, words, logits) row by row; entity scores at
    the head's temperature (the calibration section gives ECE before and after it)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    true = [gold(row, labels) for row in true_ids]
    pred, conf = zip(*[predicted(s.logits, labels, temperature) for s in scores]) if scores else ((), ())
    true_tags = [to_iob2(t, len(row)) for t, row in zip(true, true_ids)]
    pred_tags = [to_iob2(p, len(row)) for p, row in zip(pred, true_ids)]
    report = classification_report(true_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    types = sorted({label[2:] for label in labels if label != "O"})
    per_type = {t: {"precision": float(report[t]["precision"]), "recall": float(report[t]["recall"]),
                    "f1": float(report[t]["f1-score"]), "support": int(report[t]["support"])} if t in report else
                {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for t in types}
    words = sum(len(row) for row in true_ids)
    index = {name: i for i, name in enumerate(labels)}
    right = sum(int((np.asarray(a) == np.asarray([index[x] for x in b])).sum()) for a, b in zip(true_ids, pred_tags))
    kinds, pairs = Counter(), Counter()
    for t, p in zip(true, pred):
        k, c = error_kinds(t, p)
        kinds.update(k)
        pairs.update(c)
    flat_scores = np.asarray([c for row in conf for c in row])
    flat_correct = np.asarray([e in set(t) for t, p in zip(true, pred) for e in p], dtype=np.float64)
    mistakes = sorted(((c, i, e) for i, (t, p, cs) in enumerate(zip(true, pred, conf)) for e, c in zip(p, cs) if e not in set(t)),
                      key=lambda x: -x[0])[:max_examples]
    rows = ["true"] + [*types, SPURIOUS]
    columns = [*types, MISSED]
    return {
        "n": len(true_ids),
        **prf(counts(true, list(pred))),
        "token_accuracy": right / words if words else 0.0,
        "entities": {"true": int(sum(map(len, true))), "predicted": int(sum(map(len, pred)))},
        "per_type": per_type,
        "errors": {k: int(kinds[k]) for k in ERROR_KINDS},
        "type_confusion": {"rows": rows[1:], "columns": columns,
                           "matrix": [[int(pairs[(r, c)]) for c in columns] for r in rows[1:]]},
        "calibration": {**confidence_calibration(flat_scores, flat_correct), "temperature": temperature,
                        "ece_before": confidence_calibration(*scored_entities(true_ids, scores, labels))["ece"]},
        "confident_mistakes": [{"score": float(c), "predicted": e[0], "text": marked(scores[i].text, scores[i].words, e),
                                "true": [marked(scores[i].text, scores[i].words, t) for t in true[i] if t[1] < e[2] and e[1] < t[2]]}
                               for c, i, e in mistakes],
    }
