"""Feed in-memory arrays (the generated sets, or anything numpy/torch) to a ``torch.utils.data.DataLoader``."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "split_indices"]


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        if a.dtype == np.bool_:
            return torch.from_numpy(a.astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(a))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(a).__name__}")


class ArrayDataset(Dataset):
    """``dataset[i] -> (images[i], targets[i])`` (or ``images[i]`` alone without targets), as torch tensors.

    Arrays are wrapped without copying (boolean masks become int64, the dtype losses expect). ``transform`` gets and
    returns the pair ``(image, target)`` so geometric augmentations can move an image and its mask together.
    """

    def __init__(self, images, targets=None, transform: Callable | None = None):
        self.images = _as_tensor(images, "images")
        self.targets = None if targets is None else _as_tensor(targets, "targets")
        if self.images.dim() < 2:
            raise ValueError(f"images must be (N, C, *spatial) or at least (N, features), got shape "
                             f"{tuple(self.images.shape)}")
        if self.targets is not None and len(self.targets) != len(self.images):
            raise ValueError(f"images and targets must have the same length, got {len(self.images)} images and "
                             f"{len(self.targets)} targets")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.targets is None:
            return image if self.transform is None else self.transform(image, None)[0]
        target = self.targets[index]
        return (image, target) if self.transform is None else self.transform(image, target)


def split_indices(strata: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices; each stratum (class, or lesion/no lesion) is split in the same proportion."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == value))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
