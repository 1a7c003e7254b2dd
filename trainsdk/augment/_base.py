"""What every transform of the suite shares: the call contract, batch checks, range parsing, per-sample sampling.

A transform is a frozen dataclass (so the ranges a profile validated cannot change afterwards) with a ``kind``
(what a ``ClinicalProfile`` allows or refuses), ``policy_limits()`` (its configured ranges, in the units the
profiles use) and ``__call__(image, mask=None, *, generator=None)``: image ``(N, C, *spatial)`` float with 2 or 3
spatial dims, mask ``(N, Cm, *spatial)`` or ``(N, *spatial)`` of any dtype; returns the image, or ``(image, mask)``
when a mask was given. Random parameters are drawn per sample from ``generator`` (a CPU ``torch.Generator``;
``None`` uses torch's global generator), in a fixed order, so one seed gives one result.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, ClassVar, Sequence

import torch

__all__ = ["Transform", "Range", "as_ranges", "expand", "hull", "uniform", "gate", "check_batch",
           "check_probability", "finish"]

Range = tuple[float, float]


class Transform:
    """Base of the suite's transforms (see the module docstring for the contract)."""

    kind: ClassVar[str] = "custom"

    def policy_limits(self) -> dict[str, Any]:
        """Configured ranges by parameter name (``"rotation_deg": (-15.0, 15.0)``, ``"flip_axes": (1,)``, ...)."""
        raise NotImplementedError

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None):
        raise NotImplementedError


def _number(owner: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, Real):
        raise TypeError(f"{owner}: {name} must be a number or a (low, high) pair, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {v}")
    return v


def _range(owner: str, name: str, v: Any, centre: float) -> Range:
    if isinstance(v, Real) and not isinstance(v, bool):
        r = _number(owner, name, v)
        if r < 0:
            raise ValueError(f"{owner}: {name} as one number is a half-width around {centre:g} and must be >= 0, "
                             f"got {r:g}")
        return (centre - r, centre + r)
    if isinstance(v, Sequence) and len(v) == 2:
        lo, hi = _number(owner, name, v[0]), _number(owner, name, v[1])
        if lo > hi:
            raise ValueError(f"{owner}: {name} range must have low <= high, got ({lo:g}, {hi:g})")
        return (lo, hi)
    raise TypeError(f"{owner}: {name} must be a number (half-width) or a (low, high) pair, got {v!r}")


def as_ranges(owner: str, name: str, value: Any, counts: Sequence[int], centre: float = 0.0) -> tuple[Range, ...]:
    """Parse a range setting: a number r means (centre - r, centre + r); a pair of numbers (low, high) applies to
    every axis; a sequence of ranges gives one per axis and its length must be one of ``counts``.

    Returns the per-axis tuple when given per axis, else a 1-tuple that ``expand`` repeats.
    """
    is_pair = isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(x, Real) and not isinstance(x, bool) for x in value)
    if isinstance(value, Real) or is_pair:
        return (_range(owner, name, value, centre),)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be a number, a (low, high) pair or one range per axis, got {value!r}")
    if len(value) not in counts:
        raise ValueError(f"{owner}: {name} given per axis needs {' or '.join(map(str, counts))} ranges, "
                         f"got {len(value)}")
    return tuple(_range(owner, f"{name}[{i}]", v, centre) for i, v in enumerate(value))


def expand(owner: str, name: str, ranges: tuple[Range, ...], count: int) -> tuple[Range, ...]:
    """Repeat a 1-tuple to ``count`` axes; a per-axis tuple must already have ``count``."""
    if len(ranges) == 1:
        return ranges * count
    if len(ranges) != count:
        raise ValueError(f"{owner}: {name} has {len(ranges)} per-axis ranges, this input needs {count}")
    return ranges


def hull(ranges: Sequence[Range]) -> Range:
    """The smallest range holding all of ``ranges`` (what a profile compares)."""
    return (min(r[0] for r in ranges), max(r[1] for r in ranges))


def check_probability(owner: str, name: str, p: Any) -> None:
    p = _number(owner, name, p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: {name} must be a probability in [0, 1], got {p:g}")


def uniform(ranges: Sequence[Range], n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, len(ranges)) float64 draws, column k uniform in ranges[k]."""
    r = torch.tensor(ranges, dtype=torch.float64).reshape(-1, 2)
    u = torch.rand(n, r.shape[0], generator=generator, dtype=torch.float64)
    return r[:, 0] + (r[:, 1] - r[:, 0]) * u


def gate(p: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n,) bool: which samples get the transform. Always draws, so the stream does not depend on p."""
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


def check_batch(owner: str, image: Any, mask: Any = None) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """Validate an image batch (and mask); returns (image, mask as (N, Cm, *spatial), whether a channel was added)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{owner}: image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"{owner}: image must be a floating-point tensor, got {image.dtype}")
    if image.dim() not in (4, 5):
        raise ValueError(f"{owner}: image must be a (N, C, H, W) or (N, C, D, H, W) batch, got shape "
                         f"{tuple(image.shape)}")
    if mask is None:
        return image, None, False
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{owner}: mask must be a torch.Tensor, got {type(mask).__name__}")
    spatial = tuple(image.shape[2:])
    added = mask.dim() == image.dim() - 1
    m = mask.unsqueeze(1) if added else mask
    if m.dim() != image.dim() or m.shape[0] != image.shape[0] or tuple(m.shape[2:]) != spatial:
        raise ValueError(f"{owner}: mask must be (N, Cm, *spatial) or (N, *spatial) matching the image's N="
                         f"{image.shape[0]} and spatial size {spatial}, got shape {tuple(mask.shape)}")
    return image, m, added


def finish(image: torch.Tensor, mask: torch.Tensor | None, added: bool):
    """The return convention: image alone, or (image, mask) with the mask back in the caller's layout."""
    if mask is None:
        return image
    return image, (mask.squeeze(1) if added else mask)
