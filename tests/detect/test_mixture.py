"""The blocked, bounded mixture log-likelihood equals scikit-learn's score_samples in float64, on any device."""

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
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=block, first_blocks=first)
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)


def test_unit_features_in_high_dimension_match_to_1e10():
    """L2-normalised features with tight components (log-likelihoods in the thousands): float64 throughout the
    result, float32 only in the bound pass, so the scores match scikit-learn to 1e-10 relative."""
    rng = np.random.default_rng(5)
    d, k = 96, 5
    x = _blobs(rng, 1500, d, k, 2.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gmm = _fitted(x, k)
    fresh = _blobs(np.random.default_rng(6), 400, d, k, 2.0)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    ref = gmm.score_samples(fresh)
    assert np.abs(ref).max() > 100
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=16, chunk=128)
    np.testing.assert_allclose(
        scorer.log_likelihood(fresh.astype(np.float32)),
        gmm.score_samples(fresh.astype(np.float32).astype(np.float64)),
        rtol=1e-10,
    )
    np.testing.assert_allclose(scorer.log_likelihood(torch.from_numpy(fresh)), ref, rtol=1e-10)


def test_float32_exact_pass_is_close():
    rng = np.random.default_rng(5)
    d, k = 48, 4
    x = _blobs(rng, 800, d, k, 2.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gmm = _fitted(x, k)
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=16, dtype=torch.float32)
    got = scorer.log_likelihood(x[:300])
    np.testing.assert_allclose(got, gmm.score_samples(x[:300]), rtol=1e-5)
    exact = scorer.to("cpu", torch.float64).log_likelihood(x[:300])
    np.testing.assert_allclose(exact, gmm.score_samples(x[:300]), rtol=1e-10)
    assert not np.array_equal(got, exact)


def test_components_at_the_margin_are_not_skipped_by_float32_rounding():
    """Two components whose log terms differ by about MARGIN: the second's share (about e^-50) is kept or
    skipped only when provably negligible, so the result equals the full float64 sum to 1e-12."""
    from bfdkern.detect.mixture import MARGIN

    d = 8
    means = np.zeros((2, d))
    prec = np.stack([np.eye(d) * 1e3, np.eye(d) * 1e3])
    for gap in (MARGIN - 5, MARGIN, MARGIN + 5):
        w = np.array([1.0, np.exp(-gap)])
        w /= w.sum()
        scorer = MixtureScorer(w, means, prec, block=4)
        x = np.random.default_rng(0).normal(0, 1e-3, (50, d))
        maha = (x @ prec[0]) ** 2
        full = np.logaddexp(
            np.log(w[0]) + d * np.log(1e3) - 0.5 * d * np.log(2 * np.pi) - 0.5 * maha.sum(1),
            np.log(w[1]) + d * np.log(1e3) - 0.5 * d * np.log(2 * np.pi) - 0.5 * maha.sum(1),
        )
        np.testing.assert_allclose(scorer.log_likelihood(x), full, rtol=1e-12)


def _spy_stacked(scorer):
    calls = []
    original = scorer._stacked

    def spy(xc, stacked, offset):
        calls.append(len(xc))
        return original(xc, stacked, offset)

    scorer._stacked = spy
    return calls


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
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=4)
    exact = _spy(scorer, "_maha")
    stacked = _spy_stacked(scorer)
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)
    assert sum(exact) == 600 and stacked == [600]  # the bound pass stacked, then one component per row


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_close_components_are_all_finished_stacked():
    """Two nearly identical components: nothing can be skipped, the rest is computed stacked and exact."""
    rng = np.random.default_rng(8)
    d = 16
    gmm = _fitted(rng.normal(0, 1, (400, d)), 2)
    scorer = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=4)
    exact = _spy(scorer, "_maha")
    stacked = _spy_stacked(scorer)
    x = rng.normal(0, 1, (200, d))
    np.testing.assert_allclose(scorer.log_likelihood(x), gmm.score_samples(x), rtol=1e-10, atol=1e-8)
    assert sum(exact) == 200 and stacked == [200, 200]  # the likeliest exactly, then all of them stacked


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="shapes do not fit"):
        MixtureScorer(np.ones(2) / 2, np.zeros((2, 3)), np.stack([np.eye(4)] * 2))
    with pytest.raises(ValueError, match="upper triangular"):
        MixtureScorer(np.ones(1), np.zeros((1, 2)), np.array([[[1.0, 0.0], [0.5, 1.0]]]))
    scorer = MixtureScorer(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match=r"expected features \[N, 2\]"):
        scorer.log_likelihood(np.zeros((3, 5)))


@pytest.mark.cuda
def test_gpu_matches_cpu_to_1e10():
    rng = np.random.default_rng(9)
    d, k = 64, 4
    x = _blobs(rng, 1200, d, k, 2.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gmm = _fitted(x, k)
    cpu = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=16)
    gpu = MixtureScorer(gmm.weights_, gmm.means_, gmm.precisions_cholesky_, block=16, device="cuda")
    np.testing.assert_allclose(gpu.log_likelihood(x), cpu.log_likelihood(x), rtol=1e-10)


def test_cuda_without_a_gpu_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        MixtureScorer(np.ones(1), np.zeros((1, 2)), np.eye(2)[None], device="cuda")
