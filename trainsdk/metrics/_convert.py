"""Input handling shared by the metrics: numpy arrays in, torch tensors converted, shapes checked with clear errors.

Torch tensors are recognised by duck typing (``detach``/``cpu``/``numpy``) so ``trainsdk.metrics`` imports without
torch: the metrics run wherever numpy does.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["as_array", "as_labels", "as_mask", "same_shape", "spacing_for"]


def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array; a torch tensor is detached and copied to the CPU (bfloat16/half as float32)."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        t = x.detach().cpu()
        if t.is_floating_point() and t.element_size() < 4:  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like (numpy array, torch tensor, list), got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__} of objects")
    return arr


def as_labels(x: Any, name: str) -> np.ndarray:
    """An integer label array (bool -> 0/1; floats only if they hold whole numbers), values >= 0."""
    arr = as_array(x, name)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats ({arr.dtype})")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds the negative label {int(arr.min())}; labels must be >= 0")
    return arr.astype(np.int64, copy=False)


def as_mask(x: Any, name: str) -> np.ndarray:
    """A boolean mask; integer/float input must hold only 0 and 1 (a label map needs ``labels == k`` first)."""
    arr = as_array(x, name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a binary mask (bool or 0/1), got dtype {arr.dtype}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be a binary mask holding only 0 and 1, got values such as "
                         f"{np.unique(arr)[:5].tolist()}; pass (labels == k) for one class of a label map")
    return arr.astype(bool)


def same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape, got {a.shape} and {b.shape}")


def spacing_for(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel spacing per axis: None -> 1.0 each, one number -> isotropic, else one positive number per axis."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, ndim):
        raise ValueError(f"spacing must be one number or {ndim} numbers (one per axis), got {spacing!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be finite and > 0, got {spacing!r}")
    return tuple(float(v) for v in np.broadcast_to(values, (ndim,)))
