"""A small, deterministic supervised loop for classifiers on in-memory tensors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["EpochLog", "fit_classifier", "evaluate_classifier", "predict"]


@dataclass
class EpochLog:
    epoch: int
    loss: float
    train_accuracy: float


def _logits(out) -> torch.Tensor:
    # models with auxiliary heads (GoogLeNet) return a tuple in training mode; the first entry is the main head
    return out if isinstance(out, torch.Tensor) else out[0]


def fit_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10, batch_size: int = 64,
                   lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                   augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                   on_epoch: Callable[[EpochLog], None] | None = None) -> list[EpochLog]:
    """Adam + cross-entropy with a one-cycle schedule; the same ``seed`` gives the same weights.

    ``augment(batch, generator)`` transforms each training batch (it draws from the loop's generator, so runs stay
    reproducible).
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} images, {len(y)} labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got epochs={epochs}, batch_size={batch_size}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total_loss, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx] if augment is None else augment(x[idx], gen)
            logits = _logits(model(xb))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        log = EpochLog(epoch + 1, total_loss / len(x), correct / len(x))
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for ``x`` in eval mode, batch by batch."""
    model.eval()
    return torch.cat([_logits(model(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def evaluate_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(model, x).argmax(1) == y).float().mean())
