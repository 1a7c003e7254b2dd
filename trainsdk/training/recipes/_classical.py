"""Transfer regime 1: a frozen network as a feature extractor, a classical classifier on its pooled features.

Features are the model's own pre-logit vector (``forward_head(forward_features(x), pre_logits=True)``: the globally
pooled last stage for ResNet/GoogLeNet, the penultimate fully connected layer for LeNet/VGG/AlexNet), taken in eval
mode. The classifier is scikit-learn's: standardisation + logistic regression, or an RBF support vector machine.
Logistic regression on standardised features is a linear map followed by a softmax, so it is folded back into the
model's final linear layer: the result is an ordinary zoo model whose checkpoint ``deploysdk export`` takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ...metrics import MetricTracker

__all__ = ["CLASSIFIERS", "extract_features", "fit_classical", "fold_logistic_into_head", "ClassicalFit"]

CLASSIFIERS = ("logistic", "svm")


@torch.no_grad()
def extract_features(model: nn.Module, data: Dataset, *, batch_size: int = 64,
                     device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, F) float64, labels (N,) int64)`` of a dataset of ``(image, label)``, model in eval mode."""
    if not hasattr(model, "forward_features") or not hasattr(model, "forward_head"):
        raise TypeError(f"{type(model).__name__} has no forward_features/forward_head: feature extraction needs a "
                        f"zoo model")
    was_training = model.training
    model.eval().to(device)
    feats, labels = [], []
    try:
        for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
            x = x.to(device)
            model.check_input(x)
            f = model.forward_head(model.forward_features(x), pre_logits=True)  # (B, F)
            feats.append(torch.flatten(f, 1).double().cpu().numpy())
            labels.append(torch.as_tensor(y).long().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(feats), np.concatenate(labels)


def _head_linear(model: nn.Module, head: str) -> nn.Linear:
    module = model.get_submodule(head)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"the head {head!r} of {type(model).__name__} is a {type(module).__name__}, not a Linear "
                        f"layer: the logistic regression cannot be folded into it")
    return module


@torch.no_grad()
def fold_logistic_into_head(model: nn.Module, head: str, pipeline: Any) -> None:
    """Write ``StandardScaler -> LogisticRegression`` into the linear layer ``head`` (softmax(logits) = its
    ``predict_proba``). Binary problems get logits ``(0, d)``, whose softmax is ``sigmoid(d)``."""
    scaler, clf = pipeline[0], pipeline[-1]
    linear = _head_linear(model, head)
    coef = clf.coef_ / scaler.scale_  # (K or 1, F): undo the standardisation
    bias = clf.intercept_ - coef @ scaler.mean_
    if coef.shape[0] == 1:  # binary: one decision function for class 1
        coef = np.concatenate([np.zeros_like(coef), coef])
        bias = np.concatenate([np.zeros(1), bias])
    if coef.shape != tuple(linear.weight.shape):
        raise ValueError(f"logistic regression has {coef.shape[0]} classes x {coef.shape[1]} features but the head "
                         f"{head!r} is {tuple(linear.weight.shape)}")
    linear.weight.copy_(torch.as_tensor(coef, dtype=linear.weight.dtype))
    if linear.bias is None:
        raise ValueError(f"the head {head!r} has no bias; the logistic regression's intercept needs one")
    linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


@dataclass
class ClassicalFit:
    """What regime 1 produced: the fitted scikit-learn pipeline, test metrics, whether the head now holds it."""

    classifier: Any
    test_metrics: dict[str, float]
    folded: bool
    num_features: int


def _make_pipeline(classifier: str, c: float, labels: np.ndarray):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if classifier == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    # SVM scores become probabilities (for AUROC) by Platt scaling on cross-validated decision values
    folds = int(max(2, min(5, np.bincount(labels).min())))
    return make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(C=c, kernel="rbf"), cv=folds, ensemble=False))


def fit_classical(model: nn.Module, train: Dataset, test: Dataset, *, num_classes: int, head: str,
                  classifier: str = "logistic", c: float = 1.0, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> ClassicalFit:
    """Fit the classical classifier on the frozen features of ``train``; score it on ``test``; fold it into the
    head when it is the logistic regression."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    x_tr, y_tr = extract_features(model, train, batch_size=batch_size, device=device)
    x_te, y_te = extract_features(model, test, batch_size=batch_size, device=device)
    present = np.unique(y_tr)
    if len(present) != num_classes:
        raise ValueError(f"the training split holds classes {present.tolist()} of {num_classes}: every class needs "
                         f"at least one training image for the classifier")
    pipe = _make_pipeline(classifier, c, y_tr).fit(x_tr, y_tr)
    proba = pipe.predict_proba(x_te)  # (N, K), columns in class order 0..K-1
    tracker = MetricTracker(["accuracy", "sensitivity", "specificity", "auroc"], num_classes=num_classes,
                            from_logits=False)
    tracker.update(proba, y_te)
    folded = classifier == "logistic"
    if folded:
        fold_logistic_into_head(model, head, pipe)
    return ClassicalFit(pipe, tracker.compute(), folded, int(x_tr.shape[1]))
