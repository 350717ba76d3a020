import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kr.metrics import acc, auc, evaluate


def test_binary_uses_the_positive_class_score_and_half_threshold():
    y = np.array([0, 0, 1, 1])
    s = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.8, 0.2]])
    # positives scored 0.65, 0.2; negatives 0.1, 0.6 → pairs won: 0.65>0.1, 0.65>0.6, 0.2>0.1
    assert auc("binary-class", y, s) == pytest.approx(0.75)
    # predictions > 0.5: [0, 1, 1, 0] → right on items 0 and 2
    assert acc("binary-class", y, s) == pytest.approx(0.5)


def test_binary_threshold_is_strict():
    y = np.array([0, 1])
    s = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert acc("binary-class", y, s) == 0.5  # 0.5 is not > 0.5: both predicted negative


def test_multiclass_is_one_vs_rest_macro_and_argmax_accuracy():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    s = rng.dirichlet(np.ones(3), size=30)
    expected = np.mean([roc_auc_score(y == k, s[:, k]) for k in range(3)])
    assert auc("multi-class", y, s) == pytest.approx(expected)
    assert roc_auc_score(y, s, multi_class="ovr", average="macro") == pytest.approx(expected)
    assert acc("multi-class", y, s) == pytest.approx(np.mean(s.argmax(1) == y))


def test_perfect_and_reversed_scores():
    y = np.array([0, 0, 1, 1])
    good = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert evaluate("binary-class", y, good) == {"acc": 1.0, "auc": 1.0}
    assert evaluate("binary-class", y, good[:, ::-1]) == {"acc": 0.0, "auc": 0.0}


def test_multilabel_averages_per_label():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.2, 0.8], [0.7, 0.4], [0.1, 0.6]])
    # label 0 perfectly ranked (AUC 1); label 1: positives 0.8,0.4 vs negatives 0.2,0.6 → 3/4
    assert auc("multi-label, binary-class", y, s) == pytest.approx((1.0 + 0.75) / 2)
    # label 0 all right; label 1 predictions [0,1,0,1] vs [0,1,1,0] → 2/4
    assert acc("multi-label, binary-class", y, s) == pytest.approx((1.0 + 0.5) / 2)


def test_auc_skips_classes_absent_from_the_split():
    y = np.array([0, 0, 1, 1])  # class 2 never occurs
    s = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert auc("multi-class", y, s) == pytest.approx(1.0)
    assert math.isnan(auc("binary-class", np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]])))
