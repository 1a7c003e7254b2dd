"""Small models and data shared by the training tests (fast on 2 CPU cores)."""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from trainsdk.training import TrainerConfig

FEATURES, CLASSES = 10, 3


def blobs(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable-ish features: the label is the argmax of the first CLASSES features."""
    x = torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(seed))  # (n, FEATURES)
    return x, x[:, :CLASSES].argmax(1)


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, CLASSES))


class NoisyBlobs(Dataset):
    """Draws from the global numpy and ``random`` generators on every item, as augmentation code does: a resumed run
    only matches an uninterrupted one if those generators (or the workers' seeds) are restored."""

    def __init__(self, n: int = 48) -> None:
        self.x, self.y = blobs(n)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        jitter = float(np.random.normal(0, 0.1)) + random.uniform(-0.05, 0.05)
        return self.x[i] + jitter, self.y[i]


def config(**kw) -> TrainerConfig:
    base = dict(max_epochs=2, batch_size=8, device="cpu", progress=False, log_every=0)
    return TrainerConfig(**{**base, **kw})
