"""Confidence you can act on: calibration error, temperature scaling, and the coverage/accuracy sweep.

All functions take class probabilities (or logits) as numpy arrays and integer labels; nothing here
needs a model, so each is unit-tested against hand-computed cases.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

ECE_BINS = 15
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.01))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability_bins(probs: np.ndarray, y: Sequence[int], n_bins: int = ECE_BINS) -> List[Dict]:
    """Equal-width confidence bins (lo, hi]: count, mean confidence and accuracy of each non-empty bin (what
    `sklearn.calibration.calibration_curve` gives for a binary problem, plus each bin's count, which the report's
    reliability table and ECE need: calibration_curve drops empty bins without saying how full the others are)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            bins.append({"lo": float(lo), "hi": float(hi), "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return bins


def ece(probs: np.ndarray, y: Sequence[int], n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of examples) x |accuracy - mean confidence|."""
    n = len(probs)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(probs, y, n_bins)))


def brier(probs: np.ndarray, y: Sequence[int]) -> float:
    """Multiclass Brier score: mean over examples of the squared distance to the one-hot label."""
    onehot = np.eye(probs.shape[1])[np.asarray(y)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def nll(probs: np.ndarray, y: Sequence[int]) -> float:
    """Mean negative log-likelihood of the true label (scikit-learn's log_loss)."""
    from sklearn.metrics import log_loss

    return float(log_loss(np.asarray(y), probs, labels=list(range(probs.shape[1]))))


def ece_binary(p: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Calibration error of probabilities of a yes/no event (one label of a multi-label task): over equal-width bins
    of p, the share of examples times |observed rate - mean p|."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def calibration_metrics(probs: np.ndarray, y: Sequence[int]) -> Dict[str, float]:
    return {"ece": ece(probs, y), "brier": brier(probs, y), "nll": nll(probs, y)}


def fit_temperature(logits: np.ndarray, y: Sequence[int]) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda log_t: nll(softmax(logits, float(np.exp(log_t))), y),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_temperature_cv(logits: np.ndarray, y: Sequence[int], folds: int = 5, seed: int = 0) -> Dict:
    """Temperature scaling that does no harm. K-fold cross-validation on the validation split compares the held-out
    NLL of a temperature fitted on the other folds with that of T = 1; scaling is kept (T fitted on all of
    validation) only when it lowers the held-out NLL, else T = 1."""
    from sklearn.model_selection import KFold, StratifiedKFold

    logits, y = np.asarray(logits), np.asarray(y)
    k = max(2, min(folds, len(y)))
    smallest = np.bincount(y).min(initial=len(y)) if len(y) else 0
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if smallest >= k else KFold(k, shuffle=True, random_state=seed)
    scaled = unscaled = 0.0
    for train, held in splitter.split(logits, y):
        t = fit_temperature(logits[train], y[train])
        scaled += nll(softmax(logits[held], t), y[held]) * len(held)
        unscaled += nll(softmax(logits[held]), y[held]) * len(held)
    scaled, unscaled = scaled / len(y), unscaled / len(y)
    helps = scaled < unscaled
    return {"temperature": fit_temperature(logits, y) if helps else 1.0, "cv_folds": k, "cv_nll_scaled": float(scaled),
            "cv_nll_unscaled": float(unscaled),
            "decision": "scaled: it lowered held-out NLL" if helps else "T = 1: scaling did not lower held-out NLL"}


def coverage_sweep(probs: np.ndarray, y: Sequence[int], thresholds: Sequence[float] = THRESHOLDS) -> List[Dict]:
    """For each threshold: share answered (confidence >= t), accuracy and macro-F1 on those,
    and overall accuracy when every unanswered text counts as wrong (UNKNOWN)."""
    from sklearn.metrics import f1_score

    y = np.asarray(y)
    confidence, pred = probs.max(axis=1), probs.argmax(axis=1)
    labels = list(range(probs.shape[1]))
    rows = []
    for t in thresholds:
        answered = confidence >= t
        k = int(answered.sum())
        correct = int((pred[answered] == y[answered]).sum())
        rows.append({
            "threshold": float(t),
            "coverage": k / len(y),
            "answered": k,
            "accuracy": correct / k if k else None,
            "f1_macro": float(f1_score(y[answered], pred[answered], labels=labels, average="macro", zero_division=0)) if k else None,
            "overall_accuracy": correct / len(y),
        })
    return rows


def threshold_for(sweep: List[Dict], target_accuracy: float) -> Optional[float]:
    """The lowest threshold whose accuracy on answered texts reaches the target (None if none does)."""
    for row in sweep:
        if row["accuracy"] is not None and row["accuracy"] >= target_accuracy:
            return row["threshold"]
    return None
