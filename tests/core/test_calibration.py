"""Calibration and coverage sweep against small cases computed by hand."""

import numpy as np
import pytest

from encoderfit.core.calibration import (brier, coverage_sweep, ece, fit_temperature, nll, reliability_bins, softmax,
                                    threshold_for)

# 10 predictions: five at confidence 0.9 (4 right), five at 0.6 (3 right).
PROBS = np.array([[0.9, 0.1]] * 5 + [[0.4, 0.6]] * 5)
Y = np.array([0, 0, 0, 0, 1] + [1, 1, 1, 0, 0])


def test_ece_brier_nll_by_hand():
    # bin (0.867, 0.933]: accuracy 0.8 vs confidence 0.9 -> 0.5 * 0.1; bin (0.533, 0.6]: 0.6 vs 0.6 -> 0
    assert ece(PROBS, Y) == pytest.approx(0.05)
    # squared distances: 4 x 0.02 + 1.62 + 3 x 0.32 + 2 x 0.72 = 4.1 over 10 examples
    assert brier(PROBS, Y) == pytest.approx(0.41)
    expected_nll = -(4 * np.log(0.9) + np.log(0.1) + 3 * np.log(0.6) + 2 * np.log(0.4)) / 10
    assert nll(PROBS, Y) == pytest.approx(expected_nll)
    bins = reliability_bins(PROBS, Y)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(5, pytest.approx(0.6)), (5, pytest.approx(0.8))]


def test_perfectly_calibrated_predictions_have_zero_ece():
    probs = np.array([[0.5, 0.5]] * 4 + [[1.0, 0.0]] * 2)
    y = np.array([0, 1, 0, 1, 0, 0])
    assert ece(probs, y) == pytest.approx(0.0)


def test_coverage_sweep_by_hand():
    rows = {r["threshold"]: r for r in coverage_sweep(PROBS, Y)}
    assert rows[0.5]["coverage"] == 1.0 and rows[0.5]["accuracy"] == pytest.approx(0.7)
    assert rows[0.6]["coverage"] == 1.0  # confidence 0.6 is answered at threshold 0.6
    assert rows[0.7]["coverage"] == 0.5 and rows[0.7]["accuracy"] == pytest.approx(0.8)
    assert rows[0.7]["overall_accuracy"] == pytest.approx(0.4)  # UNKNOWN counts as wrong
    assert rows[0.95]["answered"] == 0 and rows[0.95]["accuracy"] is None and rows[0.95]["overall_accuracy"] == 0
    assert rows[0.7]["f1_macro"] == pytest.approx((2 * 0.8 / 1.8 + 0) / 2)  # class 0: P=0.8, R=1; class 1: none
    assert threshold_for(coverage_sweep(PROBS, Y), 0.8) == 0.61
    assert threshold_for(coverage_sweep(PROBS, Y), 0.99) is None


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(20000, 4)) * 2
    y = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 2.0  # what a model trained to near-zero loss tends to do
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.0, rel=0.05)
    assert ece(softmax(overconfident, t), y) < ece(softmax(overconfident), y) / 3
