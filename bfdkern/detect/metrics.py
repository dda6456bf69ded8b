"""Detection metrics: ROC AUC, average precision, accuracy and the ROC curve.

Every function takes ``labels`` (1 = the positive class, 0 = the negative class) and ``scores``
(higher = more positive). Which class is positive is the caller's statement: the one-class
detector scores "real" (log-likelihood under the real-face mixture), the binary detector scores
"fake" (P(fake)); see :attr:`bfdkern.detect.OneClassDetector.positive_class`.

Definitions follow scikit-learn (``roc_auc_score``, ``average_precision_score``), so numbers are
comparable with published results computed with it; ties in the scores are handled exactly
(a tied positive/negative pair counts one half in the AUC).
"""

from __future__ import annotations

import numpy as np


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


def _thresholded_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting positive for scores >= t, for each distinct score t
    in decreasing order: (tps [T], fps [T], thresholds [T])."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, s[last_of_tie]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: (false-positive rate [T+1], true-positive rate [T+1], thresholds [T+1]); the first
    point is (0, 0) with threshold +inf, then one point per distinct score, decreasing."""
    y, s = _check(labels, scores)
    tps, fps, thr = _thresholded_counts(y, s)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve in [0, 1]: the probability that a random positive scores higher than
    a random negative (ties count 1/2)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def average_precision(labels, scores) -> float:
    """Average precision in [0, 1]: sum over thresholds of (recall step) x precision, the
    step-wise area under the precision-recall curve (no interpolation), as scikit-learn defines it."""
    y, s = _check(labels, scores)
    tps, fps, _ = _thresholded_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def accuracy(labels, predictions) -> float:
    """Fraction in [0, 1] of predictions (0/1) equal to the labels (0/1)."""
    y = np.asarray(labels)
    p = np.asarray(predictions)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be non-empty 1-d arrays of the same length")
    return float(np.mean(y == p))
