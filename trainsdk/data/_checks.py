"""Argument checks shared by the generators: every message names the argument, what came and what was expected."""
from __future__ import annotations

import numbers

__all__ = ["check_range", "check_count", "spatial_shape"]


def check_range(owner: str, name: str, value, lo: float = 0.0, hi: float | None = None) -> tuple[float, float]:
    """``value`` must be a (low, high) pair with ``lo <= low <= high (<= hi)``; returns it as floats."""
    where = f"{owner}.{name}"
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{where} must be a (low, high) pair of numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{where} must have low <= high, got {value!r}")
    if low < lo or (hi is not None and high > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{where} must lie in {bound}, got {value!r}")
    return low, high


def check_count(name: str, value, minimum: int = 0) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def spatial_shape(size, ndim: int | None, minimum: int, name: str = "size") -> tuple[int, ...]:
    """An int (a cube of ``ndim`` axes) or a tuple of 2 or 3 ints -> the spatial shape, each axis >= ``minimum``."""
    if ndim is not None and ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        if ndim is None:
            raise ValueError(f"{name}={size} is a single number: also give ndim (2 or 3), or pass a tuple")
        shape = (int(size),) * ndim
    elif isinstance(size, (tuple, list)) and all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                                 for s in size):
        shape = tuple(int(s) for s in size)
        if len(shape) not in (2, 3) or (ndim is not None and len(shape) != ndim):
            want = f"{ndim} axes" if ndim is not None else "2 or 3 axes"
            raise ValueError(f"{name} must have {want}, got {size!r}")
    else:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {size!r}")
    if min(shape) < minimum:
        raise ValueError(f"{name} must be at least {minimum} along every axis, got {shape}")
    return shape
