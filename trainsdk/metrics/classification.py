"""Classification metrics: accuracy, confusion matrix, sensitivity/specificity, AUROC.

Predictions may be labels ``(N,)`` (integer), scores ``(N, C)`` (argmax is the prediction) or binary scores
``(N,)`` (floating point: positive when ``>= threshold``, 0.5 for probabilities; pass 0.0 for logits). Class ``k`` of
a multi-class problem is scored one-vs-rest; a binary problem's positive class is 1. A per-class value that is
undefined (sensitivity of a class with no positive case, specificity with no negative case, AUROC of a class absent
from ``y_true``) is NaN, and ``average="macro"`` is the mean over the defined classes.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ._convert import as_array, as_labels

__all__ = ["accuracy", "confusion_matrix", "sensitivity", "specificity", "auroc", "predicted_labels"]

AVERAGES = ("auto", "binary", "macro", None)


def predicted_labels(y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Integer labels ``(N,)`` from labels, ``(N, C)`` scores (argmax) or ``(N,)``/``(N, 1)`` binary scores."""
    arr = as_array(y_pred, "y_pred")
    if arr.ndim == 2 and arr.shape[1] > 1:
        return np.argmax(arr, axis=1).astype(np.int64)
    if arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"y_pred must be labels (N,), scores (N, C) or binary scores (N,), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError("y_pred holds NaN scores")
        return (arr >= threshold).astype(np.int64)
    return as_labels(arr, "y_pred")


def _pair(y_true: Any, y_pred: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    true = as_labels(y_true, "y_true")
    if true.ndim != 1:
        raise ValueError(f"y_true must be a 1-D array of class labels, got shape {true.shape}")
    raw = as_array(y_pred, "y_pred")
    pred = predicted_labels(raw, threshold)
    if len(pred) != len(true):
        raise ValueError(f"y_true and y_pred differ in length: {len(true)} labels, {len(pred)} predictions")
    binary_scores = np.issubdtype(raw.dtype, np.floating) and (raw.ndim == 1 or raw.shape[1] == 1)
    if binary_scores and true.size and true.max() > 1:
        raise ValueError(f"y_pred holds binary scores (1-D floats) but y_true has label {int(true.max())}; pass "
                         "(N, C) scores or integer labels for a multi-class problem")
    return true, pred


def _num_classes(true: np.ndarray, pred: np.ndarray, num_classes: int | None) -> int:
    seen = max(int(true.max(initial=0)), int(pred.max(initial=0))) + 1
    if num_classes is None:
        return max(seen, 2)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if seen > num_classes:
        raise ValueError(f"label {seen - 1} found but num_classes={num_classes} (labels must be in [0, {num_classes}))")
    return int(num_classes)


def accuracy(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> float:
    """Fraction of correct predictions, in [0, 1] (NaN for no samples)."""
    true, pred = _pair(y_true, y_pred, threshold)
    return float(np.mean(true == pred)) if true.size else float("nan")


def confusion_matrix(y_true: Any, y_pred: Any, *, num_classes: int | None = None,
                     threshold: float = 0.5) -> np.ndarray:
    """Counts ``(K, K)``: row = true class, column = predicted class (scikit-learn's layout)."""
    true, pred = _pair(y_true, y_pred, threshold)
    k = _num_classes(true, pred, num_classes)
    return np.bincount(true * k + pred, minlength=k * k).reshape(k, k).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _average(per_class: np.ndarray, average: str | None, k: int, weights: np.ndarray | None = None):
    if average not in AVERAGES and average != "weighted":
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    if average == "auto":
        average = "binary" if k == 2 else "macro"
    if average is None:
        return per_class
    if average == "binary":
        if k != 2:
            raise ValueError(f"average='binary' needs 2 classes, got {k}; use 'macro' or None")
        return float(per_class[1])
    defined = ~np.isnan(per_class)
    if not defined.any():
        return float("nan")
    if average == "weighted":
        w = weights[defined]
        return float(np.sum(per_class[defined] * w) / np.sum(w)) if w.sum() > 0 else float("nan")
    return float(np.mean(per_class[defined]))


def sensitivity(y_true: Any, y_pred: Any, *, num_classes: int | None = None, average: str | None = "auto",
                threshold: float = 0.5):
    """Recall / true-positive rate TP / (TP + FN), one-vs-rest per class.

    ``average``: ``"auto"`` (``"binary"`` for 2 classes, else ``"macro"``), ``"binary"`` (class 1, a float),
    ``"macro"`` (mean over classes with a positive case), ``None`` (array ``(K,)``, NaN where undefined).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes, threshold=threshold)
    tp = np.diag(cm)
    return _average(_ratio(tp, cm.sum(axis=1)), average, len(cm))


def specificity(y_true: Any, y_pred: Any, *, num_classes: int | None = None, average: str | None = "auto",
                threshold: float = 0.5):
    """True-negative rate TN / (TN + FP), one-vs-rest per class; ``average`` as in ``sensitivity``."""
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes, threshold=threshold)
    total = cm.sum()
    fp = cm.sum(axis=0) - np.diag(cm)
    negatives = total - cm.sum(axis=1)
    return _average(_ratio(negatives - fp, negatives), average, len(cm))


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg): the probability a positive outranks a negative, ties counting half."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score, method="average")  # tied scores share the mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true: Any, y_score: Any, *, average: str | None = "macro"):
    """Area under the ROC curve, rank-based (exact, ties handled), equal to ``sklearn.metrics.roc_auc_score``.

    Binary: ``y_score`` ``(N,)`` (score of class 1) or ``(N, 2)`` (column 1 is used); ``y_true`` in {0, 1} with both
    present (else ``ValueError``). Multi-class: ``y_score`` ``(N, C)``, one-vs-rest AUROC per class;
    ``average="macro"`` (mean over classes present in ``y_true``, scikit-learn's ``multi_class="ovr"``),
    ``"weighted"`` (by class prevalence) or ``None`` (array ``(C,)``, NaN for a class absent from ``y_true``).
    One-vs-rest compares scores within a column, so pass probabilities (softmax) rather than raw logits.
    """
    true = as_labels(y_true, "y_true")
    score = as_array(y_score, "y_score").astype(np.float64)
    if true.ndim != 1:
        raise ValueError(f"y_true must be a 1-D array of class labels, got shape {true.shape}")
    if score.ndim not in (1, 2) or score.shape[0] != true.size:
        raise ValueError(f"y_score must be (N,) or (N, C) with N = {true.size} (len(y_true)), got shape {score.shape}")
    if not np.all(np.isfinite(score)):
        raise ValueError("y_score holds NaN or infinite scores")
    if score.ndim == 2 and score.shape[1] == 1:
        score = score[:, 0]
    if score.ndim == 1 or score.shape[1] == 2:
        if true.size and true.max() > 1:
            raise ValueError(f"binary AUROC needs labels in {{0, 1}}, got label {int(true.max())}")
        value = _binary_auc(true == 1, score if score.ndim == 1 else score[:, 1])
        if np.isnan(value):
            raise ValueError("AUROC is undefined when y_true holds only one class "
                             f"(got {int((true == 1).sum())} positives among {true.size})")
        return value
    k = score.shape[1]
    if true.size and true.max() >= k:
        raise ValueError(f"y_true holds label {int(true.max())} but y_score has {k} columns")
    per_class = np.array([_binary_auc(true == c, score[:, c]) for c in range(k)])
    if average is None:
        return per_class
    if average not in ("macro", "weighted"):
        raise ValueError(f"average must be 'macro', 'weighted' or None, got {average!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _average(per_class, average, k, np.bincount(true, minlength=k).astype(np.float64))
