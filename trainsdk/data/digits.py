"""Handwritten digits that ship with scikit-learn (1,797 8x8 images), resized to LeNet's 32x32."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DigitsSplit", "load_digits"]


@dataclass
class DigitsSplit:
    x_train: torch.Tensor  # (N, 1, size, size) float32, standardized with the training mean/std
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float

    @property
    def num_classes(self) -> int:
        return 10


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """The fixed split: stratified by class, ``test_fraction`` held out, same for the same ``seed``.

    Pixel values (0..16) are scaled to [0, 1], bilinearly resized to ``size`` x ``size``, then standardized with the
    training set's mean and std (kept in the split, for export metadata and inference).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if size < 8:
        raise ValueError(f"size must be at least 8 (the source images are 8x8), got {size!r}")
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = _stratified_split(bunch.target, test_fraction, seed)
    x_train, x_test = images[train_idx], images[test_idx]
    mean, std = float(x_train.mean()), float(x_train.std())
    return DigitsSplit((x_train - mean) / std, labels[train_idx], (x_test - mean) / std, labels[test_idx], mean, std)
