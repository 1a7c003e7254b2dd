"""Classification metrics against scikit-learn and hand-counted confusion matrices."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from trainsdk.metrics import accuracy, auroc, confusion_matrix, sensitivity, specificity


def _multiclass(seed=0, n=120, k=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.standard_normal((n, k)) + 1.5 * np.eye(k)[y]  # informative, not perfect
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, prob


def test_accuracy_labels_scores_and_binary_probabilities():
    y, prob = _multiclass()
    assert accuracy(y, prob) == pytest.approx(skm.accuracy_score(y, prob.argmax(1)))
    assert accuracy(y, prob.argmax(1)) == pytest.approx(skm.accuracy_score(y, prob.argmax(1)))
    yb = np.array([0, 1, 1, 0, 1])
    assert accuracy(yb, np.array([0.2, 0.7, 0.4, 0.5, 0.9])) == pytest.approx(3 / 5)  # 0.5 counts as positive
    assert accuracy(yb, np.array([-1.0, 2.0, 0.1, 0.3, 1.0]), threshold=0.0) == pytest.approx(4 / 5)  # logits
    assert accuracy(torch.tensor(y), torch.tensor(prob)) == pytest.approx(accuracy(y, prob))


def test_confusion_matrix_matches_sklearn_layout():
    y, prob = _multiclass()
    pred = prob.argmax(1)
    np.testing.assert_array_equal(confusion_matrix(y, pred), skm.confusion_matrix(y, pred, labels=range(4)))
    cm = confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=3)  # a class never seen still gets its row
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_binary_sensitivity_specificity_hand_counted():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])  # TP 3, FN 1, TN 4, FP 2
    assert sensitivity(y, p) == pytest.approx(3 / 4)
    assert specificity(y, p) == pytest.approx(4 / 6)
    np.testing.assert_allclose(sensitivity(y, p, average=None), [4 / 6, 3 / 4])  # class 0's recall = specificity


def test_multiclass_one_vs_rest_against_sklearn():
    y, prob = _multiclass(seed=1, k=5)
    pred = prob.argmax(1)
    np.testing.assert_allclose(sensitivity(y, pred, average=None), skm.recall_score(y, pred, average=None))
    assert sensitivity(y, pred) == pytest.approx(skm.recall_score(y, pred, average="macro"))
    spec = [skm.recall_score(y != k, pred != k) for k in range(5)]  # specificity = recall of "not k"
    np.testing.assert_allclose(specificity(y, pred, average=None), spec)
    assert specificity(y, pred, average="macro") == pytest.approx(np.mean(spec))


def test_undefined_class_is_nan_and_left_out_of_macro():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 2, 1, 1])  # class 2 predicted once, never true
    per_class = sensitivity(y, p, num_classes=3, average=None)
    assert np.isnan(per_class[2]) and per_class[:2] == pytest.approx([0.5, 1.0])
    assert sensitivity(y, p, num_classes=3) == pytest.approx(0.75)


def test_auroc_binary_with_ties_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) * 0.6 + 0.3 * y, 1)  # rounding makes many ties
    assert auroc(y, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    two_col = np.stack([1 - score, score], 1)
    assert auroc(y, two_col) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert auroc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auroc([0, 1], [0.1, 0.9]) == 1.0 and auroc([1, 0], [0.1, 0.9]) == 0.0


def test_auroc_multiclass_ovr_matches_sklearn():
    y, prob = _multiclass(seed=3, k=4)
    prob = np.round(prob, 2)
    prob /= prob.sum(1, keepdims=True)
    assert auroc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr"), abs=1e-12)
    assert auroc(y, prob, average="weighted") == pytest.approx(
        skm.roc_auc_score(y, prob, multi_class="ovr", average="weighted"), abs=1e-12)
    per_class = auroc(y, prob, average=None)
    np.testing.assert_allclose(per_class, [skm.roc_auc_score(y == k, prob[:, k]) for k in range(4)], atol=1e-12)
    assert auroc(torch.tensor(y), torch.tensor(prob)) == pytest.approx(auroc(y, prob))


def test_auroc_class_absent_is_nan_per_class():
    y = np.array([0, 1, 0, 1])
    score = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]])
    per_class = auroc(y, score, average=None)
    assert np.isnan(per_class[2]) and per_class[:2] == pytest.approx([1.0, 1.0])
    assert auroc(y, score) == pytest.approx(1.0)


@pytest.mark.parametrize("call, match", [
    (lambda: accuracy([0, 1], [0, 1, 1]), "differ in length"),
    (lambda: accuracy([0, 2, 1], [0.1, 0.9, 0.5]), "binary scores"),
    (lambda: accuracy([0, -1], [0, 1]), "negative label"),
    (lambda: accuracy([0.5, 1.0], [0, 1]), "integer class labels"),
    (lambda: confusion_matrix([0, 3], [0, 1], num_classes=3), "label 3 found but num_classes=3"),
    (lambda: sensitivity([0, 1, 2], [0, 1, 2], average="binary"), "needs 2 classes"),
    (lambda: sensitivity([0, 1], [0, 1], average="micro"), "average must be"),
    (lambda: auroc([1, 1, 1], [0.2, 0.4, 0.9]), "only one class"),
    (lambda: auroc([0, 1, 1], [0.2, np.nan, 0.9]), "NaN"),
    (lambda: auroc([0, 1, 3], np.ones((3, 3)) / 3), "label 3 but y_score has 3 columns"),
    (lambda: auroc([0, 1], [0.2, 0.4, 0.9]), r"N = 2"),
])
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
