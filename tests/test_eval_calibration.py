"""Calibration: closed-form ECE/MCE/Brier, temperature scaling, and the reliability diagram."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.core.errors import ConfigError, InputError
from lmlab.eval.calibration import (
    brier_score,
    calibration_bins,
    confidences_from_probs,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    nll,
    reliability_diagram,
    softmax,
)


def test_constant_overconfident_predictor_has_closed_form_ece():
    # always 90% sure, right 7 times in 10: every prediction sits in one bin with gap 0.2
    conf = np.full(1000, 0.9)
    correct = np.tile([1] * 7 + [0] * 3, 100)
    for strategy in ("width", "mass"):
        assert expected_calibration_error(conf, correct, 10, strategy) == pytest.approx(0.2, abs=1e-12)
        assert maximum_calibration_error(conf, correct, 10, strategy) == pytest.approx(0.2, abs=1e-12)


def test_two_bin_predictor_ece_and_mce():
    # half at 0.55 with accuracy 1/2, half at 0.95 with accuracy 3/4:
    # ECE = 0.5·0.05 + 0.5·0.2 = 0.125, MCE = 0.2
    conf = np.r_[np.full(4, 0.55), np.full(4, 0.95)]
    correct = np.r_[[1, 0, 1, 0], [1, 1, 1, 0]]
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.125, abs=1e-12)
    assert expected_calibration_error(conf, correct, 2, "mass") == pytest.approx(0.125, abs=1e-12)
    assert maximum_calibration_error(conf, correct, 10) == pytest.approx(0.2, abs=1e-12)
    bins = calibration_bins(conf, correct, 10)
    assert bins.count.tolist() == [0] * 5 + [4, 0, 0, 0, 4]


def test_bin_edges_are_right_closed():
    bins = calibration_bins([0.0, 0.1, 0.1000001, 1.0], [1, 1, 1, 1], 10)
    assert bins.count.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 200_000)
    correct = rng.uniform(0, 1, conf.size) < conf
    for strategy in ("width", "mass"):
        assert expected_calibration_error(conf, correct, 15, strategy) < 0.01


def test_squared_confidence_predictor_matches_integral():
    # right with probability c² when it says c (c uniform): ECE → ∫|c − c²| dc = 1/6 as bins shrink
    rng = np.random.default_rng(1)
    conf = rng.uniform(0, 1, 400_000)
    correct = rng.uniform(0, 1, conf.size) < conf ** 2
    assert expected_calibration_error(conf, correct, 50) == pytest.approx(1 / 6, abs=0.005)


def test_brier_score_closed_form():
    assert brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1]) == pytest.approx((0 + 0.5) / 2)
    assert brier_score([0.8, 0.3], [1, 0]) == pytest.approx(((0.04 + 0.04) + (0.09 + 0.09)) / 2)
    with pytest.raises(InputError):
        brier_score([[0.5, 0.5]], [2])


def test_bad_inputs():
    with pytest.raises(InputError):
        expected_calibration_error([1.5], [1])
    with pytest.raises(InputError):
        expected_calibration_error([], [])
    with pytest.raises(ConfigError):
        expected_calibration_error([0.5], [1], strategy="quantile")


def test_temperature_scaling_recovers_the_temperature_and_never_raises_nll():
    rng = np.random.default_rng(2)
    true_logits = rng.normal(0, 2, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # a model 3× too sharp: T ≈ 3 undoes it
    held, test = slice(0, 2000), slice(2000, None)
    t = fit_temperature(overconfident[held], labels[held])
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll(overconfident[test], labels[test], t) < nll(overconfident[test], labels[test])
    conf_before, hit = confidences_from_probs(softmax(overconfident[test]), labels[test])
    conf_after, hit_after = confidences_from_probs(softmax(overconfident[test], t), labels[test])
    assert (hit == hit_after).all()  # accuracy is unchanged
    assert expected_calibration_error(conf_after, hit_after) < expected_calibration_error(conf_before, hit)
    for seed in range(5):  # on the data it was fitted on, never worse than T = 1
        r = np.random.default_rng(seed)
        z, y = r.normal(0, r.uniform(0.1, 5), (50, 3)), r.integers(0, 3, 50)
        assert nll(z, y, fit_temperature(z, y)) <= nll(z, y, 1.0) + 1e-15


def test_reliability_diagram_png(tmp_path):
    path = tmp_path / "rel.png"
    reliability_diagram([0.2, 0.6, 0.9, 0.95], [0, 1, 1, 0], str(path), n_bins=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError):
        reliability_diagram([0.5], [1], str(tmp_path / "x.jpg"))
