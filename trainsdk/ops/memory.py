"""Measure the activation memory autograd keeps for backward, to check memory claims instead of asserting them."""
from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["saved_tensor_bytes"]


def saved_tensor_bytes(fn: Callable[..., Any], *args: Any, min_bytes: int = 1 << 16) -> int:
    """Bytes of the distinct storages that tensors saved for backward during ``fn(*args)`` refer to.

    Storages smaller than ``min_bytes`` (weights, per-channel statistics) are ignored, so the figure is the
    activation memory; a storage saved by two layers (a block's output kept by it and by the next layer) counts
    once, which is what lets an in-place form show its saving.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.nbytes() >= min_bytes:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    del out
    return sum(storages.values())
