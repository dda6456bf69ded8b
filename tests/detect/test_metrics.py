"""Metrics against hand-computed values and against scikit-learn on random cases with ties."""

import numpy as np
import pytest
from sklearn import metrics as skm

from bfdkern.detect.metrics import accuracy, average_precision, roc_auc, roc_curve


def test_auc_hand_computed():
    # Positives score 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) -> 3/4.
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.6, 0.2]) == pytest.approx(0.75)
    # Perfect and reversed rankings.
    assert roc_auc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [4, 3, 2, 1]) == 0.0


def test_auc_ties_count_half():
    # One positive and one negative tied: 1/2; positive 1 vs negatives {1, 0}: (0.5 + 1) / 2.
    assert roc_auc([1, 0], [3.0, 3.0]) == pytest.approx(0.5)
    assert roc_auc([1, 0, 0], [1.0, 1.0, 0.0]) == pytest.approx(0.75)


def test_ap_hand_computed():
    # Ranking by score: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg).
    # Recall steps 1/2 at precision 1/1 and 1/2 at precision 2/3 -> 1/2 + 1/3 = 5/6.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    # All positives tied with a negative at the top: one threshold, precision 2/3, recall 1.
    assert average_precision([1, 1, 0, 0], [5.0, 5.0, 5.0, 1.0]) == pytest.approx(2 / 3)


def test_accuracy_hand_computed():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)


def test_roc_curve_points():
    fpr, tpr, thr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.8, 0.7, 0.1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.7, 1.0), 1)  # rounding makes many ties
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="need both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="same length"):
        average_precision([1, 0], [0.2])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc([1, 0], [np.nan, 0.3])
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        roc_auc([2, 0], [0.1, 0.3])
