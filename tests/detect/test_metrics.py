"""Every metric against a naive formula written from its definition and against scikit-learn, on hand-made,
random and heavily tied scores (a property test over many drawn cases)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from bfdkern.detect.metrics import (
    METRIC_KEYS,
    accuracy,
    average_precision,
    detection_metrics,
    equal_error_rate,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


# --- naive definitions: O(n^2), one threshold at a time ------------------------------------------------------
def naive_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def naive_points(y, s):
    """(fpr, tpr) for predicting positive at s >= t, t = +inf then every distinct score, decreasing."""
    pts = [(0.0, 0.0)]
    for t in sorted(set(s.tolist()), reverse=True):
        called = s >= t
        pts.append((np.sum(called & (y == 0)) / np.sum(y == 0), np.sum(called & (y == 1)) / np.sum(y == 1)))
    return pts


def naive_ap(y, s):
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        called = s >= t
        tp = np.sum(called & (y == 1))
        recall = tp / np.sum(y == 1)
        total += (recall - prev_recall) * tp / np.sum(called)
        prev_recall = recall
    return total


def naive_eer(y, s):
    pts = naive_points(y, s)
    for (f0, t0), (f1, t1) in zip(pts, pts[1:]):
        # On the segment, fpr = f0 + u (f1 - f0) and miss = 1 - t0 - u (t1 - t0); solve fpr = miss for u.
        a, b = (1 - t0) - f0, (t1 - t0) + (f1 - f0)
        if b > 0 and 0 <= a / b <= 1:
            return f0 + a / b * (f1 - f0)
    raise AssertionError("the ROC curve must cross fpr = 1 - tpr")


def naive_tpr_at(y, s, max_fpr):
    return max(t for f, t in naive_points(y, s) if f <= max_fpr + 1e-12)


def _cases():
    rng = np.random.default_rng(0)
    for _ in range(6):
        n = int(rng.integers(4, 120))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.normal(y * rng.uniform(0, 2), 1.0)
        yield y, s  # continuous scores
        yield y, np.round(s, 0)  # heavy ties
        yield y, np.round(s * 2, 0) / 2


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: f"n{len(c[0])}")
def test_each_metric_against_naive_and_sklearn(case):
    y, s = case
    assert roc_auc(y, s) == pytest.approx(naive_auc(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(naive_ap(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert equal_error_rate(y, s) == pytest.approx(naive_eer(y, s), abs=1e-12)
    for rate in (0.0, 0.01, 0.05, 0.3):
        assert tpr_at_fpr(y, s, rate) == pytest.approx(naive_tpr_at(y, s, rate), abs=1e-12)
    pred = (s > np.median(s)).astype(int)
    assert accuracy(y, pred) == pytest.approx(np.mean(y == pred), abs=1e-15)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(-4, 4)), min_size=2, max_size=40).filter(
        lambda rows: len({r[0] for r in rows}) == 2
    )
)
def test_property_small_tied_cases(rows):
    y = np.array([int(r[0]) for r in rows])
    s = np.array([float(r[1]) for r in rows])
    assert roc_auc(y, s) == pytest.approx(naive_auc(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(naive_ap(y, s), abs=1e-12)
    eer = equal_error_rate(y, s)
    assert eer == pytest.approx(naive_eer(y, s), abs=1e-12) and 0 <= eer <= 1
    assert tpr_at_fpr(y, s, 0.05) == pytest.approx(naive_tpr_at(y, s, 0.05), abs=1e-12)


def test_hand_computed_values():
    # Positives 0.8, 0.4; negatives 0.6, 0.2: pairs won 3 of 4.
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [3.0, 3.0]) == pytest.approx(0.5)  # a tie counts one half
    # Ranking 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): recall 1/2 at precision 1, 1/2 at 2/3 -> 5/6.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    # Perfect separation: no error at the crossing; reversed: all errors.
    assert equal_error_rate([0, 0, 1, 1], [1, 2, 3, 4]) == 0.0
    assert equal_error_rate([0, 0, 1, 1], [4, 3, 2, 1]) == 1.0
    # Every score tied: the ROC is the diagonal, which crosses fpr = miss at 1/2.
    assert equal_error_rate([0, 1, 0, 1], [1, 1, 1, 1]) == pytest.approx(0.5)
    # 100 negatives 0..99, positives at 97.5 and 50.5: 3 negatives above 97.5 (3% fpr) -> 1 of 2 found at 5%.
    s = np.r_[np.arange(100.0), 97.5, 50.5]
    y = np.r_[np.zeros(100, int), 1, 1]
    assert tpr_at_fpr(y, s, 0.05) == 0.5 and tpr_at_fpr(y, s, 0.01) == 0.0 and tpr_at_fpr(y, s, 0.5) == 1.0


def test_roc_curve_points():
    fpr, tpr, thr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.8, 0.7, 0.1]


def test_detection_metrics_conventions():
    """Fake is the positive class; AP with real positive is reported beside it and differs; accuracies come from
    the decisions, not the scores."""
    rng = np.random.default_rng(1)
    real, fake = rng.normal(0, 1, 80), rng.normal(1.2, 1, 30)
    real_dec, fake_dec = real > 0.5, fake > 0.5
    m = detection_metrics(real, fake, real_dec, fake_dec)
    assert list(m) == list(METRIC_KEYS)
    y = np.r_[np.zeros(80), np.ones(30)]
    s = np.r_[real, fake]
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["ap_fake"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["ap_real"] == pytest.approx(skm.average_precision_score(1 - y, -s))
    assert abs(m["ap_fake"] - m["ap_real"]) > 0.05  # unbalanced classes: the positive class matters
    assert m["real_acc"] == pytest.approx(np.mean(real <= 0.5)) and m["fake_acc"] == pytest.approx(np.mean(fake > 0.5))
    assert m["acc"] == pytest.approx((np.sum(real <= 0.5) + np.sum(fake > 0.5)) / 110)
    # The AUC and EER do not depend on which class is positive.
    swapped = detection_metrics(-fake, -real, ~fake_dec, ~real_dec)
    assert swapped["auc"] == pytest.approx(m["auc"]) and swapped["eer"] == pytest.approx(m["eer"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="need both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        average_precision([1, 0], [0.2])
    with pytest.raises(ValueError, match="non-finite"):
        equal_error_rate([1, 0], [np.nan, 0.3])
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        roc_auc([2, 0], [0.1, 0.3])
    with pytest.raises(ValueError, match="do not match"):
        detection_metrics([0.1, 0.2], [0.3], [True], [False])
