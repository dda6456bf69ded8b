"""The one-class detector: fit, threshold at the false-alarm rate, scoring, covariance types."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from bfdkern.detect.oneclass import OneClassDetector, threshold_at_false_alarm


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reals(n, d=24, seed=0):
    """Unit features around three fixed centres; ``seed`` draws fresh samples of the same distribution."""
    centers = np.random.default_rng(100).normal(0, 1, (3, d))
    rng = np.random.default_rng(seed)
    return _unit(centers[rng.integers(0, 3, n)] + 0.3 * rng.normal(0, 1, (n, d)))


def test_fit_matches_sklearn_on_normalised_features():
    x = _reals(400) * 3.0  # not unit length: the detector normalises
    det = OneClassDetector(n_components=3, seed=1, max_iter=50).fit(x)
    ref = GaussianMixture(3, covariance_type="full", init_params="k-means++", random_state=1, max_iter=50).fit(_unit(x))
    fresh = _reals(100, seed=9)
    np.testing.assert_allclose(det.score(fresh), ref.score_samples(fresh), rtol=1e-5, atol=1e-3)
    assert det.report["n_real"] == 400 and det.report["feature_dim"] == 24


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_threshold_flags_the_false_alarm_rate_of_training_reals(rate):
    x = _reals(400)
    det = OneClassDetector(n_components=3, false_alarm_rate=rate, max_iter=50).fit(x)
    flagged = det.predict(x).mean()
    assert flagged == pytest.approx(rate, abs=1.0 / 400)
    assert det.report["train_false_alarm"] == pytest.approx(flagged)


def test_threshold_order_statistic():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0, 8.0, 7.0, 6.0])
    assert threshold_at_false_alarm(scores, 0.2) == 2.0  # floor(10 * 0.2) = 2 -> third smallest
    assert threshold_at_false_alarm(scores, 0.0) == 0.0


def test_outliers_score_lower_and_are_called_fake():
    det = OneClassDetector(n_components=3, max_iter=50).fit(_reals(400))
    outliers = _unit(np.random.default_rng(3).normal(0, 1, (50, 24)))
    assert det.score(outliers).max() < np.percentile(det.score(_reals(100, seed=4)), 5)
    assert det.predict(outliers).mean() == 1.0


@pytest.mark.parametrize("cov", ["tied", "diag", "spherical"])
def test_other_covariance_types_score_like_sklearn(cov):
    x = _reals(300)
    det = OneClassDetector(n_components=3, covariance_type=cov, max_iter=50).fit(x)
    ref = GaussianMixture(3, covariance_type=cov, init_params="k-means++", random_state=0, max_iter=50).fit(x)
    fresh = _reals(50, seed=2)
    np.testing.assert_allclose(det.score(fresh), ref.score_samples(fresh), rtol=1e-5, atol=1e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="cannot fit 10 mixture components"):
        OneClassDetector().fit(_reals(5))
    with pytest.raises(ValueError, match="all zero"):
        OneClassDetector(n_components=2).fit(np.zeros((20, 4)))
    with pytest.raises(ValueError, match="false_alarm_rate"):
        OneClassDetector(false_alarm_rate=1.5)
    det = OneClassDetector(n_components=2, max_iter=20).fit(_reals(50))
    with pytest.raises(ValueError, match="dimension 5, the detector was fitted on 24"):
        det.score(np.ones((2, 5)))
    with pytest.raises(RuntimeError, match="not fitted"):
        OneClassDetector().score(np.ones((2, 5)))
