"""Cross-backend comparison in the manner of Polygraphy's comparator: every runtime on every feed, each against the
first (the reference), per output.

    report = compare([Runtime("m.onnx"), TorchRunner("m.pt"), Runtime("m_fp16.onnx")], feeds, atol=1e-4,
                     tolerances={"output": (1e-2, 1e-2)})
    print(report.summary()); assert report.passed

An output passes on a feed when every element satisfies ``|got - ref| <= atol + rtol * |ref|`` (numpy's
``allclose``; NaN only matches NaN). A runtime that lacks an output, gives another shape, or fails on a feed is a
reported failure, never an exception: the point of a comparison is to see everything that differs at once.

``deploysdk.compare`` is both this module and a callable (``deploysdk.compare(runtimes, feeds)``) so that the
package can re-export ``compare`` without hiding the module ``deploysdk.compare.compare`` lives in.
"""
from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DeploySDKError

__all__ = ["compare", "CompareReport", "OutputComparison", "normalize_feeds"]


@dataclass
class OutputComparison:
    """One output of one runtime against the reference, aggregated over all feeds."""

    runtime: str
    output: str
    shape: tuple | None = None
    max_abs: float = 0.0
    mean_abs: float = 0.0
    max_rel: float = 0.0
    mismatched: int = 0  # elements outside atol + rtol * |ref|
    elements: int = 0
    atol: float = 0.0
    rtol: float = 0.0
    notes: list[str] = field(default_factory=list)  # missing output, shape mismatch, runtime error
    matched_as: str | None = None  # the runtime's name for this output, when matched by position

    @property
    def passed(self) -> bool:
        return not self.notes and self.mismatched == 0

    def _merge(self, diff: np.ndarray, rel: np.ndarray, bad: int) -> None:
        total = self.mean_abs * self.elements + float(diff.sum())
        self.elements += diff.size
        self.mean_abs = total / self.elements if self.elements else 0.0
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0)
            self.max_rel = max(self.max_rel, float(np.nanmax(rel)) if not np.isnan(rel).all() else 0.0)
        self.mismatched += bad


@dataclass
class CompareReport:
    reference: str
    runtimes: list[str]
    feeds: int
    rows: list[OutputComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def failures(self) -> list[OutputComparison]:
        return [r for r in self.rows if not r.passed]

    def summary(self) -> str:
        """A fixed-width table, one line per runtime and output, and an overall verdict."""
        wr = max([7] + [len(r.runtime) for r in self.rows])
        outputs = [r.output if not r.matched_as else f"{r.output}={r.matched_as}" for r in self.rows]
        wo = max([6] + [len(o) for o in outputs])
        head = (f"{'runtime':<{wr}} {'output':<{wo}} {'shape':<16} {'max abs':>9} {'mean abs':>9} {'max rel':>9} "
                f"{'atol':>7} {'rtol':>7}  result")
        lines = [f"compare: {len(self.runtimes)} runtimes on {self.feeds} feed(s); reference = {self.reference}",
                 head, "-" * len(head)]
        for r, output in zip(self.rows, outputs):
            shape = "x".join(map(str, r.shape)) if r.shape is not None else "-"
            verdict = "PASS" if r.passed else ("FAIL" if not r.notes else "FAIL: " + "; ".join(r.notes))
            if r.mismatched:
                verdict += f" ({r.mismatched}/{r.elements} elements out of tolerance)"
            lines.append(f"{r.runtime:<{wr}} {output:<{wo}} {shape:<16} {r.max_abs:>9.2e} {r.mean_abs:>9.2e} "
                         f"{r.max_rel:>9.2e} {r.atol:>7.0e} {r.rtol:>7.0e}  {verdict}")
        ok = sum(r.passed for r in self.rows)
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'} ({ok}/{len(self.rows)} outputs within tolerance)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _label(rt: Any, index: int) -> str:
    path = getattr(rt, "path", None)
    name = os.path.basename(path) if isinstance(path, str) else type(rt).__name__
    providers = getattr(rt, "providers", None) or []
    where = providers[0].replace("ExecutionProvider", "") if providers else getattr(rt, "backend", "?")
    return f"{index}:{getattr(rt, 'backend', '?')}[{where}] {name}"


def normalize_feeds(feeds: Any) -> list[dict[str, np.ndarray] | np.ndarray]:
    """A list of feeds from a dict, an array, or a list of either."""
    if isinstance(feeds, (Mapping, np.ndarray)):
        return [feeds]
    feeds = list(feeds)
    if not feeds:
        raise ValueError("compare needs at least one feed")
    return feeds


def _feed_for(rt: Any, feed) -> dict[str, np.ndarray]:
    """Arrays, and one-entry dicts, go to a single-input runtime under its own input name (backends and exports may
    name the input differently); other dicts are passed as they are."""
    if isinstance(feed, Mapping):
        if len(feed) == 1 and len(rt.inputs) == 1:
            return {rt.inputs[0].name: next(iter(feed.values()))}
        return dict(feed)
    if len(rt.inputs) != 1:
        raise DeploySDKError(f"an array feed needs a single-input model; this one has inputs "
                             f"{[s.name for s in rt.inputs]}: pass dicts")
    return {rt.inputs[0].name: np.asarray(feed)}


def _pairs(ref_names: list[str], got_names: list[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Outputs are matched by name; two single-output models with different names are matched by position."""
    if len(ref_names) == len(got_names) and not set(ref_names) & set(got_names):
        return list(zip(ref_names, got_names)), "matched by position"
    return [(n, n) for n in ref_names], None


def _diff(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[np.ndarray, np.ndarray, int]:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    both_nan = np.isnan(ref64) & np.isnan(got64)
    diff = np.where(both_nan, 0.0, diff)
    rel = diff / np.maximum(np.abs(ref64), np.finfo(np.float32).tiny)
    bad = int((~np.isclose(got64, ref64, atol=atol, rtol=rtol, equal_nan=True)).sum())
    return diff, np.where(both_nan, 0.0, rel), bad


def _row(rows: dict, label: str, name: str, tol: tuple[float, float]) -> OutputComparison:
    key = (label, name)
    if key not in rows:
        rows[key] = OutputComparison(label, name, atol=tol[0], rtol=tol[1])
    return rows[key]


def _compare_outputs(rows: dict, label: str, ref: dict, got: dict, tolerances, default) -> None:
    pairs, how = _pairs(list(ref), list(got))
    for ref_name, got_name in pairs:
        row = _row(rows, label, ref_name, tolerances.get(ref_name, default))
        row.matched_as = got_name if how else None
        if got_name not in got:
            _note(row, f"no output {got_name!r} (has {sorted(got)})")
            continue
        r, g = np.asarray(ref[ref_name]), np.asarray(got[got_name])
        row.shape = tuple(r.shape)
        if r.shape != g.shape:
            _note(row, f"shape {tuple(g.shape)} vs reference {tuple(r.shape)}")
            continue
        row._merge(*_diff(r, g, row.atol, row.rtol))
    for extra in sorted(set(got) - {g for _, g in pairs}):
        _note(_row(rows, label, extra, tolerances.get(extra, default)), "output not in the reference")


def _note(row: OutputComparison, text: str) -> None:
    if text not in row.notes:
        row.notes.append(text)


def _run(rt, feed) -> tuple[dict | None, str | None]:
    try:
        return rt.run(_feed_for(rt, feed)), None
    except (DeploySDKError, ValueError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"


def compare(runtimes: Sequence, feeds, *, atol: float = 1e-4, rtol: float = 1e-3,
            tolerances: Mapping[str, tuple[float, float]] | None = None,
            labels: Sequence[str] | None = None) -> CompareReport:
    """Run every runtime on every feed and compare each against ``runtimes[0]``.

    ``runtimes``: ``Runtime``/``Runner`` objects (anything with ``inputs`` and ``run(feed)``). ``feeds``: a list of
    dicts (input name -> array), or arrays for single-input models; a single dict or array is one feed.
    ``tolerances``: per-output ``(atol, rtol)`` overrides.
    """
    runtimes = list(runtimes)
    if len(runtimes) < 2:
        raise ValueError(f"compare needs a reference and at least one runtime to compare, got {len(runtimes)}")
    names = list(labels) if labels is not None else [_label(rt, i) for i, rt in enumerate(runtimes)]
    if len(names) != len(runtimes):
        raise ValueError(f"{len(names)} labels for {len(runtimes)} runtimes")
    feeds = normalize_feeds(feeds)
    tolerances, rows = dict(tolerances or {}), {}
    for feed in feeds:
        ref, error = _run(runtimes[0], feed)
        if ref is None:
            raise DeploySDKError(f"the reference {names[0]} failed on a feed: {error}")
        for rt, label in zip(runtimes[1:], names[1:]):
            got, error = _run(rt, feed)
            if got is None:
                for name in ref:
                    _note(_row(rows, label, name, tolerances.get(name, (atol, rtol))), f"run failed: {error}")
                continue
            _compare_outputs(rows, label, ref, got, tolerances, (atol, rtol))
    return CompareReport(names[0], names, len(feeds), list(rows.values()))


class _CallableModule(types.ModuleType):
    """``deploysdk.compare(...)`` calls ``compare``; ``deploysdk.compare.CompareReport`` still reaches the module."""

    def __call__(self, *args, **kwargs) -> CompareReport:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
