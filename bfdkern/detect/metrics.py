"""Detection metrics as the field reports them, computed with scikit-learn (``sklearn.metrics``).

The generic functions take ``labels`` (1 = the positive class, 0 = the negative class) and ``scores`` (higher =
more positive); which class is positive is the caller's statement. :func:`detection_metrics` fixes the
convention for real-vs-fake evaluation: **fake is the positive class** (a detection is a fake found; a false
alarm is a real called fake), so every detector's numbers are comparable whatever its own score means:

==============  ==============================================================================================
``auc``         ROC AUC (the same with either class positive)
``ap_fake``     average precision with fake as the positive class (what DeepfakeBench and SDAIE report)
``ap_real``     average precision with real as the positive class (the one-class papers' convention)
``acc``         accuracy at the detector's own threshold, over all reals and fakes together
``real_acc``    fraction of the reals called real at that threshold
``fake_acc``    fraction of the fakes called fake at that threshold
``eer``         equal error rate: where the false-alarm rate equals the miss rate on the ROC curve (linearly
                interpolated between its points)
``tpr_at_fpr5`` fraction of the fakes detected at the strictest threshold that calls at most 5 % of the reals
                fake (no interpolation: a threshold that exists)
``tpr_at_fpr1`` the same at 1 %
==============  ==============================================================================================

All are fractions in [0, 1]; ties in the scores are handled as scikit-learn does (a tied group is one
threshold; a tied real/fake pair counts one half in the AUC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key, column label, and one-line meaning."""

    key: str
    label: str
    meaning: str


METRICS = (
    Metric("auc", "AUC", "ROC AUC, real vs fake"),
    Metric("ap_fake", "AP(fake+)", "average precision, fake = positive class"),
    Metric("ap_real", "AP(real+)", "average precision, real = positive class"),
    Metric("acc", "ACC", "accuracy at the detector's threshold, reals and fakes together"),
    Metric("real_acc", "ACC(real)", "fraction of the reals called real"),
    Metric("fake_acc", "ACC(fake)", "fraction of the fakes called fake"),
    Metric("eer", "EER", "equal error rate (false-alarm rate = miss rate)"),
    Metric("tpr_at_fpr5", "TPR@5%FPR", "fakes detected when 5% of the reals are called fake"),
    Metric("tpr_at_fpr1", "TPR@1%FPR", "fakes detected when 1% of the reals are called fake"),
)
"""Every metric :func:`detection_metrics` returns, in report order."""
METRIC_KEYS = tuple(m.key for m in METRICS)
METRIC_LABELS = {m.key: m.label for m in METRICS}


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-d arrays of the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError(f"need both classes: {n_pos} positives and {len(y) - n_pos} negatives")
    return y, s


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: (false-positive rate [T+1], true-positive rate [T+1], thresholds [T+1]); the first point is
    (0, 0) with threshold +inf, then one point per distinct score, decreasing (no point dropped)."""
    y, s = _check(labels, scores)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thr


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve in [0, 1]: the probability that a random positive scores higher than a random
    negative (ties count 1/2)."""
    y, s = _check(labels, scores)
    return float(skm.roc_auc_score(y, s))


def average_precision(labels, scores) -> float:
    """Average precision in [0, 1] of the class labelled 1: sum over thresholds of (recall step) x precision,
    without interpolation (``sklearn.metrics.average_precision_score``)."""
    y, s = _check(labels, scores)
    return float(skm.average_precision_score(y, s))


def equal_error_rate(labels, scores) -> float:
    """The rate in [0, 1] at which the false-positive rate equals the false-negative rate (1 - TPR), on the ROC
    curve linearly interpolated between its points."""
    fpr, tpr, _ = roc_curve(labels, scores)
    gap = (1.0 - tpr) - fpr  # decreases from 1 at (0, 0) to -1 at (1, 1)
    i = int(np.argmax(gap <= 0))  # first point at or past the crossing
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tpr_at_fpr(labels, scores, max_fpr: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``max_fpr``."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def accuracy(labels, predictions) -> float:
    """Fraction in [0, 1] of predictions (0/1) equal to the labels (0/1)."""
    y = np.asarray(labels)
    p = np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be non-empty 1-d arrays of the same length")
    return float(skm.accuracy_score(y, p))


def detection_metrics(real_fakeness, fake_fakeness, real_called_fake, fake_called_fake) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one set of reals against one set of fakes.

    Args:
        real_fakeness: [Nr] scores of the real images oriented so that higher = more fake (a one-class
            detector's log-likelihood negated; a binary detector's P(fake) as it is).
        fake_fakeness: [Nf] the same for the fake images.
        real_called_fake: [Nr] bool/0-1, the detector's decision at its threshold for each real image.
        fake_called_fake: [Nf] the same for each fake image.

    Returns:
        metric key -> fraction in [0, 1].
    """
    real = np.asarray(real_fakeness, dtype=np.float64)
    fake = np.asarray(fake_fakeness, dtype=np.float64)
    real_dec = np.asarray(real_called_fake).astype(bool)
    fake_dec = np.asarray(fake_called_fake).astype(bool)
    if real_dec.shape != real.shape or fake_dec.shape != fake.shape:
        raise ValueError(
            f"decisions {real_dec.shape}, {fake_dec.shape} do not match the scores {real.shape}, {fake.shape}"
        )
    labels = np.r_[np.zeros(len(real), np.int64), np.ones(len(fake), np.int64)]  # 1 = fake
    scores = np.r_[real, fake]
    return {
        "auc": roc_auc(labels, scores),
        "ap_fake": average_precision(labels, scores),
        "ap_real": average_precision(1 - labels, -scores),
        "acc": accuracy(labels, np.r_[real_dec, fake_dec].astype(np.int64)),
        "real_acc": float(np.mean(~real_dec)),
        "fake_acc": float(np.mean(fake_dec)),
        "eer": equal_error_rate(labels, scores),
        "tpr_at_fpr5": tpr_at_fpr(labels, scores, 0.05),
        "tpr_at_fpr1": tpr_at_fpr(labels, scores, 0.01),
    }
