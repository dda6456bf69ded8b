"""The one-class detector: fit, threshold at the false-alarm rate, scoring, covariance types."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from bfdkern.detect.oneclass import FitWarning, OneClassDetector, fit_set_problem, threshold_at_false_alarm


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


def test_calibration_holdout_sets_the_threshold():
    fit, calib = _reals(300, seed=1), _reals(200, seed=2)
    det = OneClassDetector(n_components=3, max_iter=50, false_alarm_rate=0.1).fit(fit, calib)
    assert det.threshold == threshold_at_false_alarm(det.score(calib), 0.1)
    assert det.predict(calib).mean() == pytest.approx(0.1, abs=1 / 200)
    assert det.report["n_calibration"] == 200 and det.report["threshold_set_on"] == "held-out calibration reals"
    in_sample = OneClassDetector(n_components=3, max_iter=50, false_alarm_rate=0.1)
    with pytest.warns(FitWarning, match="in-sample"):
        in_sample.fit(fit)
    # The mixture scores its own fit set higher than new reals: the in-sample threshold is higher and flags
    # more new reals than the 10% asked for; the calibrated one stays near it.
    assert in_sample.report["train_score_mean"] > det.report["calibration_score_mean"]
    assert in_sample.threshold > det.threshold
    fresh = _reals(1000, seed=9)
    assert in_sample.predict(fresh).mean() > 0.15 and abs(det.predict(fresh).mean() - 0.1) < 0.04


def test_no_warning_for_a_calibrated_fit_of_enough_images(recwarn):
    OneClassDetector(n_components=2, max_iter=30).fit(_reals(2 * 2 * 24 + 10, seed=3), _reals(50, seed=4))
    assert not [w for w in recwarn if issubclass(w.category, FitWarning)]


def test_too_small_fit_set_warns_with_numbers_and_a_suggestion():
    """The reported failure: a 10-component full-covariance mixture on 12 images in 768 dimensions."""
    text = fit_set_problem(12, 768, 10, "full")
    assert "10-component full-covariance mixture in 768 dimensions" in text
    assert "12 images are 1.2 per component" in text and "at least 1,536 (2 x the dimension)" in text
    assert "--components 1 --covariance diag" in text and "at least 15,360 images" in text
    assert fit_set_problem(15_360, 768, 10, "full") is None
    assert "--components 3 --covariance full" in fit_set_problem(5000, 768, 10, "full")
    assert fit_set_problem(2000, 768, 10, "tied") is None and "tied" in fit_set_problem(1000, 768, 10, "tied")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_collapse_the_warning_is_about():
    """12 images, 10 full components in 96 dimensions: the fit warns, and the detector calls fresh reals fake,
    while a diagonal single component (the suggestion) keeps the false alarms near the target."""
    fit, fresh = _reals(12, d=96, seed=5), _reals(200, d=96, seed=6)
    with pytest.warns(FitWarning, match="too small for a 10-component full-covariance"):
        det = OneClassDetector(n_components=10, max_iter=20).fit(fit)
    assert det.predict(fresh).mean() > 0.9
    assert "too small" in det.report["warnings"][0]
    small = OneClassDetector(n_components=1, covariance_type="diag").fit(fit, _reals(40, d=96, seed=7))
    assert small.predict(fresh).mean() < 0.3
