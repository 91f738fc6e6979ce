"""How sure a figure is: bootstrap confidence intervals, paired comparisons with a baseline, seed spread.

Pure numpy/scipy on arrays of per-example outcomes; nothing here needs a model. Every resampling is seeded and
states its number of resamples, so a figure is reproducible and says how it was made.

Why not `scipy.stats.bootstrap`: the intervals here resample *strata* (classes of a stratified test split) or whole
*clusters* (the questions on one paragraph), and
the paired comparison must give the model and the baseline the very same resampled examples for statistics that
are not means (entity F1 from per-sentence counts, Spearman, micro-F1 over label matrices) and also report a p-value;
scipy's bootstrap has no stratification and no p-value. Exact tests (McNemar) are scipy's `binomtest`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED, strata: Optional[Sequence] = None,
                      clusters: Optional[Sequence] = None):
    """`resamples` index arrays of size n drawn with replacement; within each stratum when `strata` is given
    (each class keeps its count, as the test split was stratified); with `clusters` (a group id per example: examples
    of one group are not independent, such as the questions on one paragraph), whole groups are drawn, as many as
    there are, and each resample holds their examples (the cluster bootstrap; Davison & Hinkley 1997, 3.8)."""
    rng = np.random.default_rng(seed)
    if clusters is not None:
        _, group = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
        members = [np.flatnonzero(group == g) for g in range(group.max() + 1)] if n else []
        for _ in range(resamples):
            yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]) if members else np.arange(0)
        return
    if strata is None:
        for _ in range(resamples):
            yield rng.integers(0, n, n)
        return
    groups = [np.flatnonzero(np.asarray(strata) == s) for s in np.unique(strata)]
    for _ in range(resamples):
        yield np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = RESAMPLES, seed: int = SEED,
                 strata: Optional[Sequence] = None, level: float = LEVEL, clusters: Optional[Sequence] = None) -> Dict:
    """Percentile bootstrap interval of `statistic(indices)` (Efron & Tibshirani 1993): {low, high, level,
    resamples, stratified[, clusters]}. Resamples where the statistic is undefined (nan) are left out."""
    draws = np.array([statistic(idx) for idx in bootstrap_indices(n, resamples, seed, strata, clusters)], dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    how = {"level": level, "resamples": resamples, "stratified": strata is not None,
           **({"clusters": int(len(set(map(str, clusters))))} if clusters is not None else {})}
    if not len(draws):
        return {"low": None, "high": None, **how}
    low, high = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"low": float(low), "high": float(high), **how}


def mcnemar_exact(model_correct: Sequence[bool], baseline_correct: Sequence[bool]) -> Dict:
    """Exact McNemar test of two classifiers on the same examples: a two-sided binomial test (p = 1/2) on the
    examples where exactly one of them is right. b: the model right and the baseline wrong; c: the reverse."""
    from scipy.stats import binomtest

    a, b = np.asarray(model_correct, bool), np.asarray(baseline_correct, bool)
    only_model, only_baseline = int((a & ~b).sum()), int((~a & b).sum())
    n = only_model + only_baseline
    p = 1.0 if n == 0 else float(binomtest(only_model, n, 0.5, alternative="two-sided").pvalue)
    return {"model_only_right": only_model, "baseline_only_right": only_baseline, "p_value": p}


def paired_bootstrap(metric: Callable[[np.ndarray, str], float], n: int, resamples: int = RESAMPLES, seed: int = SEED,
                     strata: Optional[Sequence] = None, level: float = LEVEL, clusters: Optional[Sequence] = None) -> Dict:
    """The difference metric(model) - metric(baseline) on the same resampled examples: its point value, percentile
    interval and a two-sided bootstrap p-value: twice the share of resamples on the far side of 0, counted as
    (k + 1) / (resamples + 1) (Davison & Hinkley 1997), so it is never 0: with 1,000 resamples the smallest p is 0.002.
    `metric(indices, who)` computes the metric of `who` ("model" or "baseline") on those examples. When it is
    undefined (nan) on every resample (a Pearson r of all-equal values), the difference, interval and p are None and
    "undefined" says so: there is nothing to compare."""
    everything = np.arange(n)
    point = metric(everything, "model") - metric(everything, "baseline")
    draws = np.array([metric(idx, "model") - metric(idx, "baseline") for idx in bootstrap_indices(n, resamples, seed, strata, clusters)])
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return {"difference": float(point) if np.isfinite(point) else None, "low": None, "high": None, "level": level,
                "resamples": resamples, "p_value": None, "undefined": True}
    low, high = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    far = min(int((draws <= 0).sum()), int((draws >= 0).sum()))
    return {"difference": float(point), "low": float(low), "high": float(high), "level": level, "resamples": resamples,
            "p_value": float(min(1.0, 2 * (far + 1) / (len(draws) + 1)))}


def verdict(difference: Dict, greater_is_better: bool, metric: str, p_value: Optional[float] = None, alpha: float = 0.05,
            baseline: str = "TF-IDF baseline", plain: str = "a bag of words", on: str = "test") -> Dict:
    """better / worse / not distinguishable, from the interval of the difference (and a test's p when given),
    with a sentence that says so in plain words (`baseline` and `plain` name the baseline formally and plainly, `on`
    the examples compared)."""
    low, high = difference["low"], difference["high"]
    if low is None:  # the metric is undefined on these examples for one model or both (paired_bootstrap)
        return {"outcome": "not distinguishable", "metric": metric, "difference": difference, "p_value": None,
                "sentence": f"The model and the {baseline} cannot be compared on {on}: {metric} is undefined there (all "
                            "values, or all of one model's outputs, are equal)."}
    if not greater_is_better:
        low, high = -high, -low
    significant = p_value is None or p_value < alpha
    outcome = "better" if low > 0 and significant else "worse" if high < 0 and significant else "not distinguishable"
    shown = f"{metric} difference {difference['difference']:+.4f} (95% CI {difference['low']:+.4f} to {difference['high']:+.4f})"
    p_text = f", p = {p_value:.3g}" if p_value is not None else ""
    sentence = {
        "better": f"The model is better than the {baseline} on {on}: {shown}{p_text}.",
        "worse": f"The model is worse than the {baseline} on {on}: {shown}{p_text}. The {plain.split(' ', 1)[1]} is the one to ship.",
        "not distinguishable": f"The {baseline} is as good on {'this test set' if on == 'test' else on}: the model and "
                               f"{plain} cannot be told apart ({shown}{p_text}). Ship the transformer only for reasons the test set does not measure.",
    }[outcome]
    return {"outcome": outcome, "sentence": sentence, "metric": metric, "difference": difference, "p_value": p_value}


def spread(values: Sequence[float]) -> Dict:
    """Mean, sample standard deviation, min and max of a metric over seeds."""
    x = np.asarray(values, dtype=np.float64)
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min()),
            "max": float(x.max()), "n": int(len(x))}


def with_ci(value: float, ci: Optional[Dict], fmt: str = ".4f") -> str:
    """'0.9577 (95% CI 0.9296–0.9812)': a figure as the terminal, report and card show it."""
    if not ci or ci.get("low") is None:
        return format(value, fmt)
    return f"{format(value, fmt)} ({ci['level']:.0%} CI {format(ci['low'], fmt)}–{format(ci['high'], fmt)})"
