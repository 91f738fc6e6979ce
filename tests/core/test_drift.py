"""core/drift.py on synthetic samples with known answers: no drift -> false alarms at about the test's level, a shift
-> found; ATC recovers a known accuracy drop where the mean confidence of an overconfident model does not."""

import numpy as np
import pytest

from encoderfit.core import drift


def test_ks_false_alarms_under_the_null_and_power_under_a_shift():
    rng = np.random.default_rng(1)
    null = [drift.ks(rng.poisson(20, 300), rng.poisson(20, 300))["p_value"] for _ in range(200)]
    assert np.mean(np.array(null) < 0.05) <= 0.08  # discrete lengths: KS is conservative
    shifted = [drift.ks(rng.poisson(20, 300), rng.poisson(24, 300))["p_value"] for _ in range(50)]
    assert np.mean(np.array(shifted) < 0.01) >= 0.95


def test_label_shift_psi_and_chi_square():
    rng = np.random.default_rng(2)
    labels = ["neg", "pos"]
    same = drift.label_shift(rng.choice(labels, 500).tolist(), rng.choice(labels, 500).tolist(), labels)
    assert same["psi"] < 0.05 and same["p_value"] > 0.001
    moved = drift.label_shift(rng.choice(labels, 500).tolist(), rng.choice(labels, 500, p=[0.8, 0.2]).tolist(), labels)
    assert moved["psi"] > 0.25 and moved["p_value"] < 1e-6
    assert moved["current"][0] == pytest.approx(0.8, abs=0.06)
    one = drift.label_shift(["a"] * 10, ["a"] * 10)
    assert one["p_value"] == 1.0 and one["psi"] == 0.0
    nulls = [drift.label_shift(rng.choice(labels, 300).tolist(), rng.choice(labels, 300).tolist(), labels)["p_value"] for _ in range(200)]
    assert np.mean(np.array(nulls) < 0.05) <= 0.09


def test_mmd_permutation_test_level_and_power():
    rng = np.random.default_rng(3)
    nulls = [drift.mmd(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), permutations=200, seed=i)["p_value"] for i in range(60)]
    assert np.mean(np.array(nulls) < 0.05) <= 0.12  # exact under exchangeability: about 5%
    assert min(nulls) >= 1 / 201
    shifted = drift.mmd(rng.normal(size=(150, 8)), rng.normal(size=(150, 8)) + np.r_[0.6, np.zeros(7)], permutations=500)
    assert shifted["p_value"] < 0.01 and shifted["mmd2"] > 0


def test_domain_classifier_auc_and_least_like_reference():
    rng = np.random.default_rng(4)
    same = drift.domain_classifier(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)))
    assert abs(same["auc"] - 0.5) < 0.1
    current = rng.normal(size=(200, 5))
    current[:20, 0] += 8  # 20 texts far from the reference
    found = drift.domain_classifier(rng.normal(size=(200, 5)), current)
    top = np.argsort(found["current_scores"])[::-1][:20]
    assert len(set(top) & set(range(20))) >= 16


def sample(rng, n, hardness=1.0):
    """A calibrated model's confidences (P(right | c) = c) and whether it was right; hardness > 1 puts more texts near
    0.5 (a harder domain: accuracy falls, calibration holds)."""
    confidence = 0.5 + 0.5 * rng.random(n) ** hardness
    return confidence, rng.random(n) < confidence


def test_accuracy_estimates_without_and_with_a_shift():
    rng = np.random.default_rng(5)
    val_c, val_ok = sample(rng, 3000)
    cur_c, cur_ok = sample(rng, 3000)
    same = drift.accuracy_estimates(val_c, val_ok, cur_c, resamples=200)
    for how in ("atc", "cbpe"):
        assert abs(same[how]["estimate"] - cur_ok.mean()) < 0.03
        assert same[how]["low"] <= same[how]["estimate"] <= same[how]["high"]
    cur_c, cur_ok = sample(rng, 3000, hardness=2.0)  # true accuracy about 0.67, validation's 0.75
    moved = drift.accuracy_estimates(val_c, val_ok, cur_c, resamples=200)
    assert abs(moved["cbpe"]["estimate"] - cur_ok.mean()) < 0.03  # calibration holds: the mean confidence is right
    assert moved["atc"]["estimate"] < val_ok.mean() - 0.1  # ATC sees the drop (it overstates it under this shift)


def test_atc_needs_no_calibration():
    """ATC depends on the confidences' order only: an overconfident (monotonely distorted) score gives the same
    estimate, while its mean confidence overstates the accuracy."""
    rng = np.random.default_rng(7)
    val_c, val_ok = sample(rng, 2000)
    cur_c, cur_ok = sample(rng, 2000)
    distort = lambda c: c ** 0.3  # noqa: E731
    plain = drift.accuracy_estimates(val_c, val_ok, cur_c, resamples=50)
    over = drift.accuracy_estimates(distort(val_c), val_ok, distort(cur_c), resamples=50)
    assert over["atc"]["estimate"] == pytest.approx(plain["atc"]["estimate"])
    assert abs(over["atc"]["estimate"] - cur_ok.mean()) < 0.03 < over["cbpe"]["estimate"] - cur_ok.mean()


def test_atc_threshold_matches_the_validation_accuracy():
    rng = np.random.default_rng(6)
    c = rng.uniform(0.4, 1, 1000)
    ok = rng.random(1000) < 0.8
    t = drift.atc_threshold(c, ok)
    assert (c > t).mean() == pytest.approx(ok.mean(), abs=0.002)


def test_proportion_test():
    same = drift.proportion_test(85, 100, 850, 1000)
    assert same["p_value"] > 0.5 and same["low"] < 0.85 < same["high"]
    worse = drift.proportion_test(60, 100, 900, 1000)
    assert worse["p_value"] < 1e-6
