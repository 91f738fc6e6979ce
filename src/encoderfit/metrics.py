"""Classification metrics and error analysis on arrays of labels and probabilities (scikit-learn underneath)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

AVERAGES = ("macro", "micro", "weighted")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: List[str]) -> Dict:
    """Accuracy; precision/recall/F1 macro, micro and weighted; per-class scores; confusion matrix (rows = true)."""
    ids = list(range(len(labels)))
    metrics: Dict = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=avg, zero_division=0)
        metrics.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
    metrics["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(labels)
    }
    metrics["confusion_matrix"] = {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist()}
    return metrics


def trainer_metrics(eval_pred) -> Dict[str, float]:
    """The summary metrics the Trainer logs at each evaluation (and picks the best checkpoint by)."""
    logits, y_true = eval_pred
    y_pred = np.asarray(logits).argmax(-1)
    _, _, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "f1_macro": float(f1)}


def confused_pairs(matrix: List[List[int]], labels: List[str], top: int = 10) -> List[Dict]:
    """Off-diagonal cells of the confusion matrix, largest first."""
    cells = [(matrix[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i][j]]
    return [{"true": t, "predicted": p, "count": int(c)} for c, t, p in sorted(cells, key=lambda c: -c[0])[:top]]


def wrong_with_confidence(texts: Sequence[str], y: np.ndarray, probs: np.ndarray, labels: List[str], min_confidence: float = 0.0) -> List[Dict]:
    """Examples whose predicted label differs from the given one, most confident first."""
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero((pred != y) & (conf >= min_confidence))
    order = wrong[np.argsort(-conf[wrong], kind="stable")]
    return [{"row": int(i) + 1, "text": texts[i], "label": labels[y[i]], "predicted": labels[pred[i]],
             "confidence": float(conf[i])} for i in order]
