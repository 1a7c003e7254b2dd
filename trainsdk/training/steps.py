"""Step and data plumbing shared by the Trainer: the default classification step, what a step function may
return, batches to the device, datasets from tensors, and the default evaluation (the step averaged over samples).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

__all__ = ["classification_step", "split_step_output", "batch_len", "to_device", "DeviceLoader", "mean_of_steps",
           "as_dataset", "scalar_metric"]


def classification_step(model: nn.Module, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The default step for ``(images, labels)`` batches: cross-entropy and top-1 accuracy."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"the default step_fn expects (inputs, targets) batches, got "
                        f"{type(batch).__name__}{'' if not isinstance(batch, (tuple, list)) else f' of {len(batch)}'}"
                        f"; pass step_fn=... for other batches")
    x, y = batch
    out = model(x)
    logits = out if isinstance(out, torch.Tensor) else out[0]  # auxiliary heads (GoogLeNet): main head first
    if logits.ndim != 2:
        raise ValueError(f"the default step_fn expects (N, classes) logits, got shape {tuple(logits.shape)}; pass "
                         f"step_fn=... for segmentation or other outputs")
    return {"loss": F.cross_entropy(logits.float(), y), "accuracy": (logits.argmax(1) == y).float().mean()}


def scalar_metric(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"metric {name!r} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"metric {name!r} must be a number or a one-element tensor, got {type(value).__name__}")


def split_step_output(out: Any, *, training: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss tensor, other metrics as floats)`` from what a step function returned."""
    if isinstance(out, torch.Tensor):
        loss, extra = out, {}
    elif isinstance(out, Mapping) and "loss" in out:
        loss, extra = out["loss"], {k: scalar_metric(k, v) for k, v in out.items() if k != "loss"}
    else:
        raise TypeError(f"step_fn must return a loss tensor or a dict with a 'loss' entry, got "
                        f"{type(out).__name__}{' with keys ' + str(sorted(out)) if isinstance(out, Mapping) else ''}")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"the loss must be a one-element tensor, got {type(loss).__name__}"
                        f"{' of shape ' + str(tuple(loss.shape)) if isinstance(loss, torch.Tensor) else ''}")
    if training and not loss.requires_grad:
        raise ValueError("the loss does not require grad: it was computed under torch.no_grad() or detached")
    return loss, extra


def batch_len(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (1 when it has none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        n = batch_len(item)
        if n:
            return n
    return 1


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


class DeviceLoader:
    """A DataLoader whose batches arrive on the training device (what ``eval_fn`` receives)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device, self.dataset = loader, device, loader.dataset

    def __iter__(self):
        return (to_device(b, self.device) for b in self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def mean_of_steps(step_fn: Callable) -> Callable:
    """Default ``eval_fn``: the step function's loss and metrics averaged over samples, without gradients."""
    def evaluate(model: nn.Module, loader: Iterable) -> dict[str, float]:
        sums: dict[str, float] = {}
        seen = 0
        for batch in loader:
            loss, extra = split_step_output(step_fn(model, batch), training=False)
            n = batch_len(batch)
            for k, v in {"loss": float(loss.detach()), **extra}.items():
                sums[k] = sums.get(k, 0.0) + v * n
            seen += n
        return {k: v / max(seen, 1) for k, v in sums.items()}
    return evaluate


def as_dataset(data: Any, name: str) -> Dataset:
    if isinstance(data, DataLoader):
        raise TypeError(f"{name}: pass the Dataset, not a DataLoader: the Trainer builds the loader (seeded order, "
                        f"distributed sampler, config.batch_size/num_workers) so that resume is exact")
    if isinstance(data, IterableDataset):
        raise TypeError(f"{name}: IterableDataset is not supported (its order cannot be seeded and sharded); use "
                        f"a map-style Dataset")
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        lengths = {len(t) for t in data}
        if len(lengths) != 1:
            raise ValueError(f"{name}: tensors differ in length: {[len(t) for t in data]}")
        data = TensorDataset(*data)
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise TypeError(f"{name} must be a map-style Dataset or a tuple of tensors (x, y), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")
    return data
