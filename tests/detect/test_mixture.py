"""The blocked, bounded mixture log-likelihood equals scikit-learn's score_samples."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from bfdkern.detect.mixture import MixtureScorer


def _fitted(x, k, seed=0, cov="full"):
    return GaussianMixture(k, covariance_type=cov, init_params="k-means++", random_state=seed, max_iter=30).fit(x)


def _blobs(rng, n, d, k, spread):
    centers = rng.normal(0, spread, (k, d))
    a = rng.normal(0, 1, (k, d, d)) / np.sqrt(d)
    lab = rng.integers(0, k, n)
    return centers[lab] + np.einsum("nd,nde->ne", rng.normal(0, 1, (n, d)), a[lab]) + 0.05 * rng.normal(0, 1, (n, d))


@pytest.mark.parametrize(
    "spread, block, first",
    [(5.0, 8, 1), (0.3, 8, 1), (0.0, 7, 2), (5.0, 64, 1), (1.0, 5, 6)],
    ids=["separated", "overlapping", "one-blob-odd-block", "single-block", "all-first-blocks"],
)
def test_equals_sklearn_float64(spread, block, first):
    rng = np.random.default_rng(int(spread * 10) + block)
    d, k = 30, 4
    gmm = _fitted(_blobs(rng, 600, d, k, spread), k)
    # Fresh points: in-distribution, far outliers and points between components.
    x = np.concatenate(
        [_blobs(rng, 200, d, k, spread), rng.normal(0, 20, (20, d)), gmm.means_[:2].mean(0, keepdims=True)]
    )
    scorer = MixtureScorer(
        gmm.weights_, gmm.means_, gmm.precisions_cholesky_, dtype=torch.float64, block=block, first_blocks=first
    )
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)


def test_float32_close_to_sklearn():
    rng = np.random.default_rng(5)
    d, k = 48, 5
    x = _blobs(rng, 800, d, k, 2.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gmm = _fitted(x, k)
    fresh = _blobs(np.random.default_rng(6), 300, d, k, 2.0)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    ref = gmm.score_samples(fresh)
    got = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=16).log_likelihood(fresh)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def _spy(scorer, name):
    calls = []
    original = getattr(scorer, name)

    def spy(xc, arg):
        calls.append(len(xc))
        return original(xc, arg)

    setattr(scorer, name, spy)
    return calls


def test_components_below_margin_are_skipped_without_changing_the_result():
    """Two far-apart components: each point finishes only its likelier component, and the result is exact."""
    rng = np.random.default_rng(7)
    d = 16
    x = np.concatenate([rng.normal(0, 1, (300, d)), rng.normal(40, 1, (300, d))])
    gmm = _fitted(x, 2)
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, dtype=torch.float64, block=4)
    rest = _spy(scorer, "_rest")
    stacked = _spy(scorer, "_stacked")
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)
    assert sum(rest) == 600 and stacked == [600]  # the first block stacked, then one component per row


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_close_components_are_all_finished_stacked():
    """Two nearly identical components: nothing can be skipped, the rest is computed stacked and exact."""
    rng = np.random.default_rng(8)
    d = 16
    gmm = _fitted(rng.normal(0, 1, (400, d)), 2)
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, dtype=torch.float64, block=4)
    rest = _spy(scorer, "_rest")
    stacked = _spy(scorer, "_stacked")
    x = rng.normal(0, 1, (200, d))
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)
    assert sum(rest) == 200 and stacked == [200, 200]


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="shapes do not fit"):
        MixtureScorer(np.ones(2) / 2, np.zeros((2, 3)), np.stack([np.eye(4)] * 2))
    with pytest.raises(ValueError, match="upper triangular"):
        MixtureScorer(np.ones(1), np.zeros((1, 2)), np.array([[[1.0, 0.0], [0.5, 1.0]]]))
    scorer = MixtureScorer(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match=r"expected features \[N, 2\]"):
        scorer.log_likelihood(np.zeros((3, 5)))
