"""Confidence intervals, McNemar, paired bootstrap, verdicts and calibration that does no harm, on cases computed by hand."""

import numpy as np
import pytest

from encoderfit.core.calibration import fit_temperature_cv, softmax
from encoderfit.core.stats import bootstrap_ci, bootstrap_indices, mcnemar_exact, paired_bootstrap, spread, verdict, with_ci


@pytest.mark.parametrize("model_only,baseline_only,p", [
    (5, 0, 2 * 0.5 ** 5),             # 5 discordant pairs, all for the model: 2 x P(X = 5 | n = 5, 1/2) = 0.0625
    (3, 1, 2 * (1 + 4) / 16),         # 2 x P(X <= 1 | n = 4) = 0.625
    (0, 0, 1.0),                      # no disagreement: nothing to test
    (10, 10, 1.0),
])
def test_exact_mcnemar_by_hand(model_only, baseline_only, p):
    both = 20  # examples both get right (or wrong) do not count
    model = [True] * model_only + [False] * baseline_only + [True] * both
    baseline = [False] * model_only + [True] * baseline_only + [True] * both
    result = mcnemar_exact(model, baseline)
    assert (result["model_only_right"], result["baseline_only_right"]) == (model_only, baseline_only)
    assert result["p_value"] == pytest.approx(p)


def test_bootstrap_ci_of_an_accuracy_matches_the_binomial_spread():
    correct = np.array([1] * 80 + [0] * 20, dtype=float)
    ci = bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), resamples=4000)
    half = 1.96 * np.sqrt(0.8 * 0.2 / 100)  # 0.078: the normal approximation
    assert ci["low"] == pytest.approx(0.8 - half, abs=0.02) and ci["high"] == pytest.approx(0.8 + half, abs=0.02)
    assert ci["resamples"] == 4000 and ci["level"] == 0.95 and not ci["stratified"]
    always = bootstrap_ci(lambda idx: np.ones(100)[idx].mean(), 100)
    assert always["low"] == always["high"] == 1.0
    again = bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), resamples=4000)
    assert again == ci  # seeded: the same figure every time


def test_stratified_resamples_keep_each_class_count():
    strata = np.array([0] * 7 + [1] * 3)
    for idx in bootstrap_indices(10, resamples=50, strata=strata):
        assert (strata[idx] == 0).sum() == 7 and (strata[idx] == 1).sum() == 3


def test_cluster_resamples_draw_whole_groups_and_widen_the_interval_as_they_should():
    """20 paragraphs of 5 questions each, every paragraph all right or all wrong: 20 independent outcomes, not 100.
    The cluster bootstrap's interval is that of 20 draws (about sqrt(5) times the per-question one)."""
    clusters = np.repeat([f"p{k}" for k in range(20)], 5)
    right = np.repeat(np.array([1.0] * 12 + [0.0] * 8), 5)
    for idx in bootstrap_indices(100, resamples=30, clusters=clusters):
        counts = np.unique(clusters[idx], return_counts=True)[1]
        assert len(idx) == 100 and set(counts % 5) == {0}  # whole paragraphs, as many as there are
    per_question = bootstrap_ci(lambda idx: right[idx].mean(), 100, resamples=2000)
    per_paragraph = bootstrap_ci(lambda idx: right[idx].mean(), 100, resamples=2000, clusters=clusters)
    width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
    assert per_paragraph["clusters"] == 20 and 1.8 < width(per_paragraph) / width(per_question) < 2.8


def test_paired_bootstrap_and_verdicts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    same = paired_bootstrap(lambda idx, who: float((y[idx] == y[idx]).mean()), len(y))
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["p_value"] == 1.0
    assert verdict(same, True, "accuracy")["outcome"] == "not distinguishable"
    model_right = rng.random(400) < 0.9
    base_right = rng.random(400) < 0.7
    diff = paired_bootstrap(lambda idx, who: float((model_right if who == "model" else base_right)[idx].mean()), 400)
    assert diff["difference"] == pytest.approx(model_right.mean() - base_right.mean())
    assert diff["low"] > 0 and diff["p_value"] == pytest.approx(2 / 1001)  # no resample on the far side: never p = 0
    better = verdict(diff, True, "accuracy", p_value=1e-6)
    assert better["outcome"] == "better" and "better than the TF-IDF baseline" in better["sentence"]
    assert verdict(diff, False, "rmse")["outcome"] == "worse"  # the same numbers, for a metric where lower is better
    assert verdict(diff, True, "accuracy", p_value=0.2)["outcome"] == "not distinguishable"  # the exact test disagrees


def test_spread_and_formatting():
    s = spread([0.9, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["sd"] == pytest.approx(0.02) and (s["min"], s["max"]) == (0.9, 0.94)
    assert with_ci(0.958, {"low": 0.930, "high": 0.981, "level": 0.95}, ".3f") == "0.958 (95% CI 0.930–0.981)"


def test_temperature_cv_keeps_t_1_where_scaling_cannot_help_and_scales_where_it_does():
    y = np.random.default_rng(1).integers(0, 3, 300)
    flat = np.zeros((300, 3))  # every temperature gives the same probabilities: scaling cannot help
    kept = fit_temperature_cv(flat, y)
    assert kept["temperature"] == 1.0 and kept["decision"].startswith("T = 1")
    rng = np.random.default_rng(2)
    true_logits = rng.normal(size=(600, 3)) * 2
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    scaled = fit_temperature_cv(true_logits * 3.0, labels)  # overconfident by 3x
    assert scaled["decision"].startswith("scaled") and scaled["temperature"] == pytest.approx(3.0, rel=0.25)
    assert scaled["cv_nll_scaled"] < scaled["cv_nll_unscaled"]
