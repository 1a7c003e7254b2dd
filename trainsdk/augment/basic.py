"""Cheap batch augmentations on tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_translate"]


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of a (N, C, H, W) batch by its own integer offset in [-max_shift, max_shift] per axis.

    Borders are filled by replicating the edge pixels (background in most medical and digit images).
    """
    if x.dim() != 4:
        raise ValueError(f"random_translate expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0 or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), mode="replicate")  # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]
