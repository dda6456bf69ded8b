"""The one-class detector: a Gaussian mixture fitted to real faces' features only.

Features are L2-normalised (unless ``normalize=False``), a scikit-learn ``GaussianMixture`` (10 components, full covariance,
k-means++ initialisation, seeded) is fitted to them, and an image's score is its log-likelihood
under the mixture: high = looks like the real faces. The decision threshold is the score that the
given fraction of the calibration reals fall below (5 % by default, the false-alarm rate): an image
scoring below it is called fake. The calibration reals are a held-out set when one is given; otherwise
the fit set itself (in-sample, which the mixture scores higher than new reals: the fit warns).

Fitting warns (:class:`FitWarning`, with the numbers and a concrete suggestion) when the fit set is too
small for the mixture asked for (:func:`fit_set_problem`): a 10-component full-covariance mixture of 768-d
features fitted on 12 images collapses onto its regularisation and calls every new image fake.

Scoring runs in torch, float64, on the detector's device (:meth:`OneClassDetector.to`).

Convention (the paper's): the positive class of this detector's score is **real**.
"""

from __future__ import annotations

import warnings

import numpy as np

from bfdkern.detect.choices import COVARIANCE_TYPES
from bfdkern.detect.mixture import MixtureScorer

SAMPLES_PER_PARAMETER_ROW = 2
"""A covariance estimated from fewer than this many samples per dimension (full: per component; tied: in all) is
too small a sample for the mixture (its sample covariance is singular below 1 per dimension)."""
MIN_PER_COMPONENT = 10
"""Fewest samples per component for the diagonal and spherical mixtures (a handful of variances each)."""


class FitWarning(UserWarning):
    """A detector fit that will probably not generalise (too few samples, a threshold set in-sample)."""


def min_fit_samples(n_components: int, covariance_type: str, dim: int) -> int:
    """The fewest fit images for a ``n_components`` mixture of ``covariance_type`` in ``dim`` dimensions."""
    k, d = int(n_components), int(dim)
    if covariance_type == "full":
        return k * SAMPLES_PER_PARAMETER_ROW * d
    if covariance_type == "tied":
        return max(SAMPLES_PER_PARAMETER_ROW * d, k * MIN_PER_COMPONENT)
    return k * MIN_PER_COMPONENT


def fit_set_problem(n: int, dim: int, n_components: int, covariance_type: str) -> str | None:
    """A one-paragraph warning with the numbers and a concrete suggestion when ``n`` fit images are too few for
    the mixture; None when they suffice."""
    need = min_fit_samples(n_components, covariance_type, dim)
    if n >= need:
        return None
    k = int(n_components)
    what = f"a {k}-component {covariance_type}-covariance mixture in {dim:,} dimensions"
    if covariance_type == "full":
        why = (
            f"{n:,} images are {n / k:.1f} per component, but a full covariance needs at least "
            f"{SAMPLES_PER_PARAMETER_ROW * dim:,} ({SAMPLES_PER_PARAMETER_ROW} x the dimension) per component"
        )
    elif covariance_type == "tied":
        why = f"{n:,} images, but one shared full covariance needs at least {SAMPLES_PER_PARAMETER_ROW * dim:,}"
    else:
        why = f"{n:,} images are {n / k:.1f} per component, fewer than {MIN_PER_COMPONENT}"
    options = []
    for cov in (covariance_type, *(c for c in ("tied", "diag", "spherical") if c != covariance_type)):
        fits = max((c for c in range(1, k + 1) if min_fit_samples(c, cov, dim) <= n), default=0)
        if fits:
            options.append(f"--components {fits} --covariance {cov}")
        if len(options) == 2:
            break
    suggestion = " or ".join(options) if options else "a larger fit set"
    return (
        f"the fit set is too small for {what}: {why}; the mixture collapses onto its regularisation and calls "
        f"new real images fake. Use {suggestion}, or fit on at least {need:,} images."
    )


IN_SAMPLE = (
    "the threshold is set in-sample, on the {n:,} images the mixture was fitted on, which it scores higher than "
    "new real images: expect more than {rate:.0%} false alarms on new reals. Hold out a calibration set "
    "(fit-oneclass --calibration 0.2, or --calibration DIR)."
)


def l2_normalise(features, name: str = "features") -> np.ndarray:
    """[N, D] -> rows scaled to unit length (float32 stays float32, anything else becomes float64).
    Rejects non-finite and all-zero rows."""
    x = np.asarray(features)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty [N, D] array, got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.isfinite(norm).all():
        raise ValueError(f"{name}: {int((~np.isfinite(norm)).sum())} rows contain NaN or inf")
    if np.any(norm == 0):
        raise ValueError(f"{name}: {int((norm == 0).sum())} rows are all zero and cannot be normalised")
    return x / norm


def checked_features(features, name: str = "features") -> np.ndarray:
    """[N, D] -> the same rows as float64, unscaled (the ``normalize=False`` path). Rejects non-finite rows."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty [N, D] array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} rows contain NaN or inf")
    return x


def full_precision_cholesky(precisions_cholesky: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_`` of any covariance type -> [K, D, D] upper-triangular."""
    p = np.asarray(precisions_cholesky, dtype=np.float64)
    if covariance_type == "full":
        return p
    if covariance_type == "tied":
        return np.broadcast_to(p, (k, d, d)).copy()
    if covariance_type == "diag":
        return np.stack([np.diag(row) for row in p])
    if covariance_type == "spherical":
        return np.stack([np.eye(d) * s for s in p])
    raise ValueError(f"unknown covariance_type {covariance_type!r}, expected one of {list(COVARIANCE_TYPES)}")


class OneClassDetector:
    """Gaussian mixture on L2-normalised real-face features; score = log-likelihood (nats).

    Args:
        n_components: mixture components K.
        covariance_type: ``full`` (the paper's), ``tied``, ``diag`` or ``spherical``.
        init_params: scikit-learn initialisation (``k-means++`` by default).
        seed: random state of the initialisation.
        false_alarm_rate: fraction of the training reals the threshold calls fake.
        reg_covar, max_iter, tol: passed to ``GaussianMixture``.
        normalize: L2-normalise the features before fitting and scoring (the paper's); False fits the mixture
            on the features as given (Zou25's unnormalised features).
    """

    kind = "oneclass"
    positive_class = "real"
    score_name = "log-likelihood"

    def __init__(
        self,
        n_components: int = 10,
        covariance_type: str = "full",
        init_params: str = "k-means++",
        seed: int = 0,
        false_alarm_rate: float = 0.05,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        tol: float = 1e-3,
        normalize: bool = True,
    ):
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"unknown covariance_type {covariance_type!r}, expected one of {list(COVARIANCE_TYPES)}")
        if not 0.0 <= false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in [0, 1), got {false_alarm_rate}")
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.params = {
            "n_components": int(n_components),
            "covariance_type": covariance_type,
            "init_params": init_params,
            "seed": int(seed),
            "false_alarm_rate": float(false_alarm_rate),
            "reg_covar": float(reg_covar),
            "max_iter": int(max_iter),
            "tol": float(tol),
            "normalize": bool(normalize),
        }
        self.weights: np.ndarray | None = None
        self.means: np.ndarray | None = None
        self.precisions_cholesky: np.ndarray | None = None
        self.threshold: float | None = None
        self.report: dict = {}
        self.device = "cpu"
        self.fit_scores: np.ndarray | None = None  # [N] log-likelihoods of the fit set, after fit()
        self.calibration_scores: np.ndarray | None = None  # [M] of the calibration set, when one was given
        self._scorer: MixtureScorer | None = None

    # --- fitting -----------------------------------------------------------------------------
    def fit(self, real_features, calibration_features=None) -> OneClassDetector:
        """Fit to real features [N, D] (N >= n_components) and set the threshold from the scores of
        ``calibration_features`` [M, D] (held-out reals), or of the fit set itself when None (in-sample).

        Warns (:class:`FitWarning`) when N is too small for the mixture and when the threshold is in-sample."""
        # lazy: heavy (scikit-learn, ~0.9 s), only fitting; scoring needs none
        from sklearn.mixture import GaussianMixture

        p = self.params
        x = self._prepare(real_features, "real features").astype(np.float64)
        if x.shape[0] < max(2, p["n_components"]):
            raise ValueError(f"real features: {x.shape[0]} samples cannot fit {p['n_components']} mixture components")
        calib = None
        if calibration_features is not None:
            calib = self._prepare(calibration_features, "calibration features").astype(np.float64)
            if calib.shape[1] != x.shape[1]:
                raise ValueError(f"calibration features are {calib.shape[1]}-d, the fit features {x.shape[1]}-d")
        notes = []
        problem = fit_set_problem(x.shape[0], x.shape[1], p["n_components"], p["covariance_type"])
        if problem:
            notes.append(problem)
        if calib is None:
            notes.append(IN_SAMPLE.format(n=x.shape[0], rate=p["false_alarm_rate"]))
        for note in notes:
            warnings.warn(note, FitWarning, stacklevel=2)
        gmm = GaussianMixture(
            n_components=p["n_components"],
            covariance_type=p["covariance_type"],
            init_params=p["init_params"],
            random_state=p["seed"],
            reg_covar=p["reg_covar"],
            max_iter=p["max_iter"],
            tol=p["tol"],
        ).fit(x)
        self.set_mixture(gmm.weights_, gmm.means_, gmm.precisions_cholesky_)
        train_scores = self.score(x)
        calib_scores = self.score(calib) if calib is not None else train_scores
        self.threshold = threshold_at_false_alarm(calib_scores, p["false_alarm_rate"])
        self.report = {
            "n_real": int(x.shape[0]),
            "n_calibration": int(len(calib_scores)) if calib is not None else 0,
            "threshold_set_on": "held-out calibration reals" if calib is not None else "the fit set (in-sample)",
            "feature_dim": int(x.shape[1]),
            "converged": bool(gmm.converged_),
            "n_iter": int(gmm.n_iter_),
            "train_score_mean": float(train_scores.mean()),
            "train_false_alarm": float(np.mean(train_scores < self.threshold)),
            "calibration_score_mean": float(calib_scores.mean()) if calib is not None else None,
            "warnings": notes,
        }
        self.fit_scores, self.calibration_scores = train_scores, (calib_scores if calib is not None else None)
        return self

    def set_mixture(self, weights, means, precisions_cholesky) -> None:
        """Install mixture parameters in scikit-learn's layout for this covariance type."""
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.precisions_cholesky = np.asarray(precisions_cholesky, dtype=np.float64)
        k, d = self.means.shape
        full = full_precision_cholesky(self.precisions_cholesky, self.params["covariance_type"], k, d)
        self._scorer = MixtureScorer(self.weights, self.means, full, device=self.device)

    def to(self, device, dtype=None) -> OneClassDetector:
        """Score on ``device`` (``"cpu"``, ``"cuda"``, ...), in float64 unless ``dtype`` is ``torch.float32``
        (:class:`~bfdkern.detect.mixture.MixtureScorer`). Returns self."""
        self.device = str(device)
        if self._scorer is not None:
            self._scorer.to(device, dtype)
        return self

    @property
    def feature_dim(self) -> int:
        """D, the feature size the detector was fitted on."""
        self._check_fitted()
        return int(self.means.shape[1])

    def _prepare(self, features, name: str) -> np.ndarray:
        return l2_normalise(features, name) if self.params["normalize"] else checked_features(features, name)

    def _check_fitted(self) -> None:
        if self._scorer is None or self.threshold is None:
            raise RuntimeError("the one-class detector is not fitted")

    # --- scoring -----------------------------------------------------------------------------
    def score(self, features) -> np.ndarray:
        """[N, D] features -> [N] log-likelihoods (nats, float64); higher = more like the real faces."""
        if self._scorer is None:
            raise RuntimeError("the one-class detector is not fitted")
        x = self._prepare(features, "features")
        if x.shape[1] != self._scorer.dim:
            raise ValueError(f"features have dimension {x.shape[1]}, the detector was fitted on {self._scorer.dim}")
        return self._scorer.log_likelihood(x)

    def predict(self, features) -> np.ndarray:
        """[N, D] -> [N] int: 1 = fake (score below the threshold), 0 = real."""
        return self.decide(self.score(features))

    def decide(self, scores) -> np.ndarray:
        """Scores [N] -> [N] int: 1 = fake (score < threshold), 0 = real."""
        self._check_fitted()
        return (np.asarray(scores) < self.threshold).astype(np.int64)

    # --- files -------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able metadata, arrays) for :func:`bfdkern.detect.serialization.save_detector`."""
        self._check_fitted()
        meta = {"params": self.params, "threshold": self.threshold, "report": self.report}
        arrays = {"weights": self.weights, "means": self.means, "precisions_cholesky": self.precisions_cholesky}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> OneClassDetector:
        """Inverse of :meth:`state`."""
        det = cls(**meta["params"])
        det.set_mixture(arrays["weights"], arrays["means"], arrays["precisions_cholesky"])
        det.threshold = float(meta["threshold"])
        det.report = dict(meta.get("report", {}))
        return det


def threshold_at_false_alarm(real_scores, rate: float) -> float:
    """The score below which a fraction ``rate`` of ``real_scores`` lies: the ``floor(N * rate)``-th
    smallest score (0-based), so that calling "fake" every score strictly below it flags at most
    ``rate`` of the reals."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    return float(s[min(int(len(s) * rate), len(s) - 1)])
