"""Sample grids: a batch of images tiled into one picture, saved as PNG (Pillow, written atomically)."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from deploysdk._atomic import atomic_path

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images: Any, nrow: int = 8, *, value_range: tuple[float, float] | None = None, padding: int = 2,
               pad_value: float = 0.0) -> np.ndarray:
    """Tile (N, C, H, W) images (C = 1 or 3; tensor or array) into a uint8 array (rows, cols) or (rows, cols, 3),
    ``nrow`` images per row. ``value_range``: intensities mapped to 0..255 (values outside are clipped), e.g.
    (-1, 1) for tanh outputs; None: the batch's own min..max. ``pad_value`` is on the 0..1 scale."""
    a = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or a.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1 and C = 1 or 3, got shape {a.shape}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    if not np.isfinite(a).all():
        raise ValueError("images hold NaN or inf values")
    lo, hi = (float(a.min()), float(a.max())) if value_range is None else map(float, value_range)
    if not hi > lo:
        hi = lo + 1.0  # a constant batch: show it as black rather than divide by zero
    a = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    n, c, h, w = a.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y:y + h, x:x + w] = a[i]
    out = np.round(grid * 255.0).astype(np.uint8)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_image_grid(images: Any, path: str | os.PathLike, nrow: int = 8, **kwargs: Any) -> np.ndarray:
    """``image_grid(images, nrow, **kwargs)`` written to ``path`` as PNG; returns the grid."""
    from PIL import Image

    grid = image_grid(images, nrow, **kwargs)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return grid
