"""Errors of the data layer."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset cannot be built or read as asked; ``problems`` lists every offending path with its reason.

    The message names each of them (not just the first), so one run shows everything there is to fix.
    """

    def __init__(self, message: str, problems=()):
        self.problems = [(str(p), str(r)) for p, r in problems]
        lines = [message] + [f"  {p}: {r}" for p, r in self.problems]
        super().__init__("\n".join(lines))
