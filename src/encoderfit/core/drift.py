"""Has the traffic changed? Two-sample tests between a reference sample (the run's validation split) and a window of
logged traffic, and accuracy estimated without labels. Pure numpy/scipy/scikit-learn on arrays; nothing here
knows a model or a task.

- numbers per text (length in tokens, share of unknown tokens, confidence): two-sample Kolmogorov-Smirnov
  (`scipy.stats.ks_2samp`);
- predicted label shares: the population stability index (PSI) and a chi-square test of the 2 x K table
  (`scipy.stats.chi2_contingency`);
- sentence embeddings: the maximum mean discrepancy (MMD, Gretton et al. 2012) with a Gaussian kernel of median
  bandwidth, its p-value from label permutations (exact under the null, whatever the dimension), plus a domain
  classifier's held-out AUC (logistic regression, cross-validated): how well traffic can be told from the reference,
  and which texts look least like it;
- accuracy without labels: average thresholded confidence (ATC, Garg et al. 2022) and the mean calibrated confidence
  (CBPE), each with a bootstrap interval.

Which of them `monitor` runs, on what, and how its report shows them is the drift-test registry's (runs/drift/).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

PERMUTATIONS = 1000
SEED = 0


def ks(reference: Sequence[float], current: Sequence[float]) -> Dict:
    """Two-sample Kolmogorov-Smirnov test: {statistic, p_value, reference_mean, current_mean}."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if not len(a) or not len(b):
        return {"statistic": None, "p_value": None, "reference_mean": None, "current_mean": None}
    result = ks_2samp(a, b)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue), "reference_mean": float(a.mean()),
            "current_mean": float(b.mean())}


def psi(reference_shares: Sequence[float], current_shares: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index: sum over categories of (cur - ref) * ln(cur / ref), shares floored at `floor` so an
    empty category stays finite. Rule of thumb: under 0.1 stable, 0.1-0.25 moderate, over 0.25 a large shift."""
    a = np.maximum(np.asarray(reference_shares, dtype=np.float64), floor)
    b = np.maximum(np.asarray(current_shares, dtype=np.float64), floor)
    return float(((b - a) * np.log(b / a)).sum())


def label_shift(reference: Sequence[str], current: Sequence[str], labels: Optional[Sequence[str]] = None) -> Dict:
    """Predicted label shares in two samples: {labels, reference, current (shares), psi, chi2, p_value}. The chi-square
    test runs on the categories seen in either sample (one category: nothing to test, p = 1)."""
    from scipy.stats import chi2_contingency

    names = list(labels) if labels is not None else sorted(set(reference) | set(current))
    names += sorted((set(reference) | set(current)) - set(names))
    counts = np.array([[sum(1 for x in sample if x == n) for n in names] for sample in (reference, current)], dtype=np.float64)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    seen = counts.sum(0) > 0
    if seen.sum() < 2 or counts.sum(1).min() == 0:
        chi2, p = 0.0, 1.0
    else:
        chi2, p = (float(v) for v in chi2_contingency(counts[:, seen])[:2])
    return {"labels": names, "reference": shares[0].tolist(), "current": shares[1].tolist(),
            "psi": psi(shares[0], shares[1]), "chi2": chi2, "p_value": p}


def _sq_distances(x: np.ndarray) -> np.ndarray:
    norms = (x * x).sum(1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * x @ x.T, 0)


def mmd(reference: np.ndarray, current: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED) -> Dict:
    """Maximum mean discrepancy (biased estimate of MMD²) between two samples of vectors, Gaussian kernel with the
    median pairwise distance as bandwidth; p-value from `permutations` random relabellings of the pooled sample,
    (k + 1) / (permutations + 1), so it is never 0: the smallest is 1 / (permutations + 1)."""
    x = np.concatenate([np.asarray(reference, np.float64), np.asarray(current, np.float64)])
    n, m = len(reference), len(current)
    if n < 2 or m < 2:
        return {"mmd2": None, "p_value": None, "bandwidth": None, "permutations": 0}
    d2 = _sq_distances(x)
    bandwidth = float(np.sqrt(np.median(d2[np.triu_indices(len(x), 1)]))) or 1.0
    kernel = np.exp(-d2 / (2 * bandwidth ** 2)).astype(np.float32)

    def statistic(assign: np.ndarray) -> np.ndarray:  # assign: (n + m, k) columns of 1 (first sample) / 0
        a = assign / n
        b = (1 - assign) / m
        ka, kb = kernel @ a, kernel @ b
        return (a * ka).sum(0) + (b * kb).sum(0) - 2 * (a * kb).sum(0)

    observed = float(statistic(np.r_[np.ones(n), np.zeros(m)].astype(np.float32)[:, None])[0])
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < permutations:
        k = min(200, permutations - done)
        assign = np.zeros((n + m, k), dtype=np.float32)
        for j in range(k):
            assign[rng.permutation(n + m)[:n], j] = 1
        exceed += int((statistic(assign) >= observed - 1e-12).sum())
        done += k
    return {"mmd2": observed, "p_value": (exceed + 1) / (permutations + 1), "bandwidth": bandwidth,
            "permutations": permutations}


def domain_classifier(reference: np.ndarray, current: np.ndarray, folds: int = 5, seed: int = SEED) -> Dict:
    """How well a logistic regression tells current from reference vectors, held out (stratified K-fold): {auc,
    current_scores}; AUC 0.5 means indistinguishable. `current_scores[i]`: the held-out probability that current
    vector i is traffic rather than reference: the highest are the texts least like the reference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = min(folds, len(reference), len(current))
    if folds < 2:
        return {"auc": None, "current_scores": [None] * len(current)}
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    scores = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return {"auc": float(roc_auc_score(y, scores)), "current_scores": scores[len(reference):].tolist()}


def atc_threshold(confidence: Sequence[float], correct: Sequence[bool]) -> float:
    """ATC's threshold, fitted on labelled held-out examples (monitor: validation and test): the share of confidences
    above it equals the accuracy there (Garg et al. 2022, eq. 1, with the maximum softmax probability as the score)."""
    c = np.sort(np.asarray(confidence, dtype=np.float64))
    accuracy = float(np.mean(correct))
    if accuracy >= 1:
        return float(c[0] - 1e-12) if len(c) else 0.0
    return float(np.quantile(c, 1 - accuracy, method="lower"))


def accuracy_estimates(confidence: Sequence[float], correct: Sequence[bool], current: Sequence[float],
                       resamples: int = 1000, seed: int = SEED, level: float = 0.95) -> Dict:
    """Accuracy on unlabelled traffic from its confidences: {atc, cbpe} each {estimate, low, high}. ATC: the share of
    current confidences above the threshold fitted on (confidence, correct) held-out pairs; CBPE: the mean
    (calibrated) confidence. Intervals: percentile bootstrap resampling the held-out pairs and traffic alike (ATC's
    threshold refitted each time)."""
    ref_c, ref_ok = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    cur = np.asarray(current, np.float64)
    if not len(cur) or not len(ref_c):
        return {"atc": None, "cbpe": None}
    threshold = atc_threshold(ref_c, ref_ok)
    rng = np.random.default_rng(seed)
    atc, cbpe = [], []
    for _ in range(resamples):
        i, j = rng.integers(0, len(ref_c), len(ref_c)), rng.integers(0, len(cur), len(cur))
        atc.append(float((cur[j] > atc_threshold(ref_c[i], ref_ok[i])).mean()))
        cbpe.append(float(cur[j].mean()))
    q = [(1 - level) / 2, 1 - (1 - level) / 2]

    def shown(value, draws):
        low, high = np.quantile(draws, q)
        return {"estimate": float(value), "low": float(low), "high": float(high), "level": level, "resamples": resamples}

    return {"atc": {**shown((cur > threshold).mean(), atc), "threshold": threshold}, "cbpe": shown(cur.mean(), cbpe)}


def proportion_test(successes: int, n: int, reference_successes: int, reference_n: int) -> Dict:
    """A share (feedback accuracy) against a reference share (the test accuracy) measured on other examples: Fisher's
    exact test of the 2 x 2 table, two-sided, and the share's Wilson interval."""
    from scipy.stats import binomtest, fisher_exact

    if n == 0:
        return {"value": None, "low": None, "high": None, "p_value": None, "n": 0}
    interval = binomtest(successes, n).proportion_ci(0.95, method="wilson")
    table = [[successes, n - successes], [reference_successes, reference_n - reference_successes]]
    p = float(fisher_exact(table).pvalue) if reference_n else None
    return {"value": successes / n, "low": float(interval.low), "high": float(interval.high), "p_value": p, "n": n,
            "reference": reference_successes / reference_n if reference_n else None}
