"""OneClassDetector(normalize=False): the mixture sees the features' scale (Zou25), and keeps it in its file."""

import numpy as np
import pytest

from bfdkern.detect import OneClassDetector, Preprocessing, load_detector, save_detector


def _features(seed, n=60, d=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=(n, 1))  # rows of varied length


def test_scale_matters_only_without_normalisation():
    x, y = _features(0), _features(1)[:10]
    normalised = OneClassDetector(n_components=2, normalize=True).fit(x)
    raw = OneClassDetector(n_components=2, normalize=False).fit(x)
    np.testing.assert_allclose(normalised.score(3 * y), normalised.score(y))
    assert not np.allclose(raw.score(3 * y), raw.score(y))
    assert np.all(raw.score(10 * y) < raw.score(y).max())  # far from the reals -> low likelihood
    assert raw.means.shape == (2, 4) and np.abs(np.linalg.norm(raw.means, axis=1) - 1).max() > 0.05


def test_unnormalised_detector_round_trips(tmp_path):
    x, y = _features(2), _features(3)[:10]
    det = OneClassDetector(n_components=3, normalize=False, seed=4).fit(x)
    encoder = {"fingerprint": "0" * 64, "source": "none", "config": {}}
    path = save_detector(tmp_path / "zou25.npz", det, encoder=encoder, preprocessing=Preprocessing(size=32))
    loaded, _ = load_detector(path)
    assert loaded.params["normalize"] is False and loaded.params["n_components"] == 3
    np.testing.assert_array_equal(loaded.score(y), det.score(y))


def test_non_finite_features_are_named():
    x = _features(4)
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="real features: 1 rows contain NaN"):
        OneClassDetector(n_components=2, normalize=False).fit(x)
