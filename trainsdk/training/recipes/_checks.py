"""Argument checks shared by the recipe and experiment configs."""
from __future__ import annotations

from typing import Iterable

__all__ = ["check_positive_ints"]


def check_positive_ints(config: object, names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the config and field when a field is not an integer >= 1 (bools rejected)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}: {name} must be a positive integer, got {value!r}")
