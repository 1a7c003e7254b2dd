"""Shared helpers of the benchmark scripts: median-of-N timing, interleaved side-by-side timing, plain tables.

Side-by-side timing runs the candidates round-robin (A, B, C, A, B, C, ...) rather than one after the other, so a
slow phase of a shared machine (another process, frequency scaling) hits every candidate alike and the ratios hold.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["Timing", "time_fn", "time_side_by_side", "format_table", "print_table"]


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``runs`` timed calls (after warm-up)."""

    p50_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> "Timing":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()), len(ms))


def time_fn(fn: Callable[[], object], *, repeat: int = 30, warmup: int = 3) -> Timing:
    """Median of ``repeat`` timed calls of ``fn()`` after ``warmup`` untimed ones."""
    return time_side_by_side({"fn": fn}, repeat=repeat, warmup=warmup)["fn"]


def time_side_by_side(fns: Mapping[str, Callable[[], object]], *, repeat: int = 30,
                      warmup: int = 3) -> dict[str, Timing]:
    """Time every callable ``repeat`` times, interleaved round-robin; name -> Timing."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: Timing.from_seconds(t) for name, t in times.items()}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> str:
    """The first ``left`` columns (labels) left-aligned, the others (figures) right-aligned, widths fitted."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> None:
    print(format_table(headers, rows, left=left))


def results_parser(doc: str, experiments: Sequence[str]):
    """The command line shared by the results_issue*.py scripts: --threads, --only, --quick."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=list(experiments), default=list(experiments))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the claims")
    return parser


def print_results(issue: int, rows: Sequence[Sequence[object]], threads: int, quick: bool) -> None:
    """The closing table of a results script: result, target, measured, met; with the machine's load."""
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nIssue {issue} results, CPU, {threads} thread(s), {os.cpu_count()} cores, load average {load:.1f}"
          f"{' (QUICK: not the claims)' if quick else ''}")
    print(format_table(["result", "target", "measured", "met"],
                       [list(r[:3]) + ["yes" if r[3] else "NO"] for r in rows], left=4))
