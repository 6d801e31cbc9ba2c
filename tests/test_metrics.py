import numpy as np
import pytest

from ferlab.metrics import classification_metrics, classification_report, confusion_matrix

NAMES = ("a", "b", "c")


def test_hand_computed_three_class_example():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P = 2/2, R = 2/3, F1 = 0.8 ; b: P = 1/2, R = 1/2, F1 = 0.5 ; c: P = 1/2, R = 1, F1 = 2/3
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                   "support": 3}
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["precision"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    assert "macro avg" in classification_report(m)


def test_probabilities_are_argmaxed_and_absent_classes_are_zero():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    m = classification_metrics([0, 0], probs, NAMES)
    assert m["accuracy"] == 0.5
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_select_ensemble_picks_the_subset_that_scores_best():
    from ferlab.evaluation import select_ensemble
    labels = np.array([0, 1, 2, 0])
    onehot = np.eye(3)[labels]
    wrong = np.eye(3)[[1, 2, 0, 1]]
    probs = {"good": 0.6 * onehot + 0.4 * wrong, "also_good": 0.55 * onehot + 0.45 * wrong,
             "bad": 0.9 * wrong + 0.1 * onehot}
    assert select_ensemble(probs, labels) == ("also_good", "good")
    assert select_ensemble(probs, labels, min_size=3) == ("also_good", "bad", "good")
    assert select_ensemble({"a": onehot}, labels) == ()   # nothing to ensemble
