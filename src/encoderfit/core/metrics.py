"""Metrics and error analysis on arrays of targets and predictions (scikit-learn and scipy underneath): single-label
and multi-label classification, regression. Pure numpy in, plain dicts out: no model needed."""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

AVERAGES = ("macro", "micro", "weighted")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: List[str]) -> Dict:
    """Accuracy; precision/recall/F1 macro, micro and weighted; per-class scores; confusion matrix (rows = true)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

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


def confused_pairs(matrix: List[List[int]], labels: List[str], top: int = 10) -> List[Dict]:
    """Off-diagonal cells of the confusion matrix, largest first."""
    cells = [(matrix[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i][j]]
    return [{"true": t, "predicted": p, "count": int(c)} for c, t, p in sorted(cells, key=lambda c: -c[0])[:top]]


def wrong_with_confidence(texts: Sequence[str], y: np.ndarray, probs: np.ndarray, labels: List[str], min_confidence: float = 0.0) -> List[Dict]:
    """Examples whose predicted label differs from the given one, most confident first."""
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero((pred != y) & (conf >= min_confidence))
    order = wrong[np.argsort(-conf[wrong], kind="stable")]
    return [{"row": int(i) + 1, "label": labels[y[i]], "predicted": labels[pred[i]], "confidence": float(conf[i]),
             "text": texts[i]} for i in order]


def multilabel_metrics(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, labels: List[str],
                       texts: Sequence[str] = (), max_examples: int = 0) -> Dict:
    """Multi-label metrics of decisions probs >= thresholds (per label): F1 micro/macro/weighted/samples, subset
    accuracy, Hamming loss, per-label scores, label cardinality, per-label calibration, confusions and mistakes."""
    from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support, precision_score, recall_score

    from .calibration import ece_binary

    y = np.asarray(y) > 0.5
    pred = probs >= thresholds[None, :]
    m: Dict = {"n": int(len(y)), "subset_accuracy": float((pred == y).all(1).mean()), "hamming_loss": float(hamming_loss(y, pred))}
    for avg in ("micro", "macro", "weighted", "samples"):
        m[f"f1_{avg}"] = float(f1_score(y, pred, average=avg, zero_division=0))
    for avg in ("micro", "macro"):
        m[f"precision_{avg}"] = float(precision_score(y, pred, average=avg, zero_division=0))
        m[f"recall_{avg}"] = float(recall_score(y, pred, average=avg, zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    m["per_label"] = {name: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]),
                             "threshold": float(thresholds[j])} for j, name in enumerate(labels)}
    m["cardinality"] = {"true": float(y.sum(1).mean()), "predicted": float(pred.sum(1).mean()),
                        "empty_true": float((y.sum(1) == 0).mean()), "empty_predicted": float((pred.sum(1) == 0).mean())}
    eces = [ece_binary(probs[:, j], y[:, j]) for j in range(len(labels)) if y[:, j].any()]
    m["calibration"] = {"ece_mean": float(np.mean(eces)) if eces else None, "ece_pooled": ece_binary(probs.ravel(), y.ravel())}
    false_pos, false_neg = pred & ~y, ~pred & y
    confused = false_pos.T.astype(int) @ false_neg.astype(int)  # [a, b]: predicted a where b was true
    missed = false_neg.T.astype(int) @ false_neg.astype(int)
    m["confused_pairs"] = _top_pairs(confused, labels, symmetric=False)
    m["co_missed"] = _top_pairs(missed, labels, symmetric=True)
    mistakes = []
    if max_examples:
        wrong = np.argwhere(false_pos | false_neg)
        confidence = np.where(false_pos[wrong[:, 0], wrong[:, 1]], probs[wrong[:, 0], wrong[:, 1]], 1 - probs[wrong[:, 0], wrong[:, 1]])
        for k in np.argsort(-confidence, kind="stable")[:max_examples]:
            i, j = wrong[k]
            mistakes.append({"row": int(i) + 1, "label": labels[j], "kind": "spurious" if false_pos[i, j] else "missed",
                             "probability": float(probs[i, j]), "text": str(texts[i])[:300]})
    m["confident_mistakes"] = mistakes
    return m


def _top_pairs(matrix: np.ndarray, labels: List[str], symmetric: bool, top: int = 10) -> List[Dict]:
    cells = [(int(matrix[a, b]), a, b) for a in range(len(labels)) for b in range(len(labels))
             if a != b and matrix[a, b] and (not symmetric or a < b)]
    return [{"a": labels[a], "b": labels[b], "count": c} for c, a, b in sorted(cells, key=lambda c: -c[0])[:top]]


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> Dict:
    """Pearson, Spearman, MAE, RMSE and R² of predicted against true values."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, predicted = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    varies = len(y) > 1 and y.std() > 0 and predicted.std() > 0
    return {"n": int(len(y)),
            "pearson": float(pearsonr(y, predicted)[0]) if varies else 0.0,
            "spearman": float(spearmanr(y, predicted)[0]) if varies else 0.0,
            "mae": float(mean_absolute_error(y, predicted)),
            "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
            "r2": float(r2_score(y, predicted)) if len(y) > 1 else 0.0}
