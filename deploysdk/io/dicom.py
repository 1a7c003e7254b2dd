"""DICOM series input: scan a folder into series, pick one by rules, read it into a ``Volume`` (HU for CT).

What happens to bad input (one bad file never sinks a study; an unusable series is a clear ``SeriesError``):

* unreadable / not DICOM / no SeriesInstanceUID -> ``ScanResult.unreadable`` and ``Volume.skipped``;
* missing Rows/Columns/BitsAllocated/PixelRepresentation, truncated or undecodable pixel data, a compressed transfer
  syntax without an installed decoder (the reason names the syntax and the pip packages), size, orientation or pixel
  spacing different from the series majority, missing ImagePositionPatient when the others have it, duplicate
  positions (the first by InstanceNumber is kept) -> ``Volume.skipped`` with the reason;
* slices are sorted by the projection of ImagePositionPatient on the normal (row cosines x column cosines) of
  ImageOrientationPatient, so ``array[k]`` runs along the normal; without geometry they are ordered by
  InstanceNumber and a warning is recorded in ``meta["warnings"]`` (and issued as a ``UserWarning``);
* non-uniform slice spacing (e.g. a gap where a bad slice was dropped): ``nonuniform="warn"`` (default) keeps the
  slices, uses the median gap in the affine and records a warning; ``meta["slice_positions"]`` keeps the true
  positions. ``nonuniform="error"`` raises ``SeriesError`` instead.
"""
from __future__ import annotations

import os
import re
import warnings as _warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import SeriesError, UnreadableFileError
from . import _stacking
from ._dicom_header import (DICOMDIR_SOP_CLASS, FileProblem, SliceHeader, has_pixels, read_dataset, series_fields,
                            slice_headers, window_of)
from ._dicom_pixels import decode
from .volume import SkippedFile, Volume

__all__ = ["SeriesRule", "SeriesInfo", "ScanResult", "scan_dicom", "select_series", "read_dicom_series",
           "read_dicom_file", "window"]


@dataclass(frozen=True)
class SeriesRule:
    """Which series to read: all given conditions must hold; among several matches the one with most slices wins.

    ``modality``: one code or a tuple ("CT", ("CT", "PT")), case-insensitive. ``description``/``exclude_description``:
    regular expressions searched case-insensitively in SeriesDescription (e.g. exclude ``"scout|localizer"``).
    """

    modality: str | tuple[str, ...] | None = None
    description: str | None = None
    exclude_description: str | None = None
    min_slices: int = 1

    def __post_init__(self):
        if self.min_slices < 1:
            raise ValueError(f"SeriesRule.min_slices must be >= 1, got {self.min_slices}")
        for pattern in (self.description, self.exclude_description):
            if pattern is not None:
                re.compile(pattern)

    def mismatch(self, info: "SeriesInfo") -> str | None:
        """Why ``info`` does not satisfy the rule, or None."""
        if self.modality is not None:
            wanted = (self.modality,) if isinstance(self.modality, str) else tuple(self.modality)
            if info.modality.upper() not in {m.upper() for m in wanted}:
                return f"modality {info.modality or '(none)'} is not {'/'.join(wanted)}"
        if self.description is not None and not re.search(self.description, info.description, re.I):
            return f"description {info.description!r} does not match {self.description!r}"
        if self.exclude_description is not None and re.search(self.exclude_description, info.description, re.I):
            return f"description {info.description!r} matches the exclusion {self.exclude_description!r}"
        if info.slice_count < self.min_slices:
            return f"{info.slice_count} readable slice(s), fewer than min_slices={self.min_slices}"
        return None


@dataclass
class SeriesInfo:
    """One series found by ``scan_dicom``: identity, files with a readable header, and per-file problems."""

    series_uid: str
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    fields: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[SkippedFile] = field(default_factory=list)
    slices: list[SliceHeader] = field(default_factory=list, repr=False)

    @property
    def slice_count(self) -> int:
        return len(self.slices)

    def label(self) -> str:
        return f"series {self.series_number} {self.description!r} ({self.modality}, {self.slice_count} slices, " \
               f"{self.series_uid})"


class ScanResult(list):
    """A list of SeriesInfo (sorted by series number, then UID) plus ``unreadable``: files that belong to none."""

    def __init__(self, series=(), unreadable=(), source=""):
        super().__init__(series)
        self.unreadable: list[SkippedFile] = list(unreadable)
        self.source = source

    def summary(self) -> str:
        lines = [s.label() + (f", {len(s.problems)} problem file(s)" if s.problems else "") for s in self]
        return "\n".join(lines + [f"unreadable: {p}: {r}" for p, r in self.unreadable])


def _list_files(folder_or_files) -> list[str]:
    """Files under the inputs, sorted. Hidden files (e.g. half-written ``.name.tmp`` of atomic writers) are ignored."""
    items = [folder_or_files] if isinstance(folder_or_files, (str, os.PathLike)) else list(folder_or_files)
    out = []
    for item in map(os.fspath, items):
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        elif os.path.exists(item):
            out.append(item)
        else:
            raise UnreadableFileError(item, "no such file or folder")
    return out


def scan_dicom(folder_or_files) -> ScanResult:
    """Read every header under a folder (recursively) or in a list of files, grouped by SeriesInstanceUID."""
    series: dict[str, SeriesInfo] = {}
    unreadable, paths = [], _list_files(folder_or_files)
    for path in paths:
        try:
            ds = read_dataset(path, header_only=True)
            if str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
                raise FileProblem("DICOMDIR index file, not an image (the series are read from the image files)")
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            if not uid:
                raise FileProblem("missing required tag SeriesInstanceUID" + (
                    "" if has_pixels(ds) else " and no pixel data (truncated file, or not an image)"))
        except FileProblem as exc:
            unreadable.append(SkippedFile(path, str(exc)))
            continue
        if uid not in series:
            f = series_fields(ds)
            series[uid] = SeriesInfo(uid, f.get("modality", ""), f.get("description", ""), f.get("series_number"), f)
        info = series[uid]
        info.files.append(path)
        try:
            info.slices += slice_headers(ds, path)
        except FileProblem as exc:
            info.problems.append(SkippedFile(path, str(exc)))
    ordered = sorted(series.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
    single = isinstance(folder_or_files, (str, os.PathLike))
    return ScanResult(ordered, unreadable, os.fspath(folder_or_files) if single else f"{len(paths)} files")


def select_series(scan: ScanResult, rule: SeriesRule | None = None, series_uid: str | None = None) -> SeriesInfo:
    """The series named by ``series_uid``, else the best match of ``rule``; SeriesError says why none fits."""
    if not scan:
        raise SeriesError(f"no DICOM series found in {scan.source}", scan.unreadable)
    if series_uid is not None:
        for info in scan:
            if info.series_uid == series_uid:
                return info
        raise SeriesError(f"series {series_uid} is not in {scan.source}; found:",
                          [(s.series_uid, s.label()) for s in scan])
    rule = rule or SeriesRule()
    reasons = [(s.label(), rule.mismatch(s)) for s in scan]
    matches = [s for s, (_, why) in zip(scan, reasons) if why is None]
    if not matches:
        raise SeriesError(f"no series in {scan.source} matches {rule}", reasons + scan.unreadable)
    return max(matches, key=lambda s: (s.slice_count, -(s.series_number or 0)))


def _load_pixels(slices: list[SliceHeader], problems: list[SkippedFile]):
    """Decode each file once; returns ({path: frames array}, {path: dataset}) for the files that decode."""
    frames, datasets = {}, {}
    for path in dict.fromkeys(s.path for s in slices):
        try:
            ds = read_dataset(path, header_only=False)
            frames[path], datasets[path] = decode(ds, path), ds
        except FileProblem as exc:
            problems.append(SkippedFile(path, str(exc)))
    return frames, datasets


def _thickness(ds) -> float | None:
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(tag) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def _stack(slices, frames) -> np.ndarray:
    """(z, y, x[, samples]) float32 with each slice's own RescaleSlope/Intercept applied."""
    first = frames[slices[0].path][slices[0].frame or 0]
    out = np.empty((len(slices),) + first.shape, dtype=np.float32)
    for k, s in enumerate(slices):
        raw = frames[s.path][s.frame or 0].astype(np.float32)
        out[k] = raw * np.float32(s.slope) + np.float32(s.intercept) if (s.slope, s.intercept) != (1.0, 0.0) else raw
    return out


def _meta(info: SeriesInfo, ds, slices, proj, warnings_: list[str], scan: ScanResult) -> dict:
    meta = dict(info.fields)
    rescale = {(s.slope, s.intercept) for s in slices}
    meta.update(window=window_of(ds), rescale=next(iter(rescale)) if len(rescale) == 1 else "per-slice",
                photometric_interpretation=str(ds.get("PhotometricInterpretation", "")), warnings=warnings_,
                slice_positions=None if proj is None else proj.tolist(),
                other_series=[s.label() for s in scan if s is not info])
    if slices[0].samples > 1:
        meta["channel_axis"] = -1
    return meta


def _read_selected(info: SeriesInfo, scan: ScanResult, nonuniform: str) -> Volume:
    problems, warnings_ = list(info.problems), []
    slices = _stacking.consistent(list(info.slices), problems)
    frames, datasets = _load_pixels(slices, problems)
    slices = [s for s in slices if s.path in frames]
    slices, proj = _stacking.order(slices, problems, warnings_)
    skipped = problems + scan.unreadable
    if not slices:
        raise SeriesError(f"{info.label()} has no usable slice", skipped)
    ds = datasets[slices[0].path]
    affine, spacing, message = _stacking.geometry(slices, proj, _thickness(ds), warnings_)
    if message is not None:
        if nonuniform == "error":
            raise SeriesError(f"{info.label()}: {message}", skipped)
        warnings_.append(message + "; the affine uses the median gap, meta['slice_positions'] has the true ones")
    for w in warnings_:
        _warnings.warn(f"{info.label()}: {w}", UserWarning, stacklevel=3)
    volume = Volume(_stack(slices, frames), affine, spacing, info.modality,
                    _meta(info, ds, slices, proj, warnings_, scan), [s.name for s in slices], skipped)
    return volume


def read_dicom_series(path, rule: SeriesRule | None = None, *, series_uid: str | None = None,
                      nonuniform: str = "warn") -> Volume:
    """Read one series from a folder, a list of files, or a ``ScanResult`` into a (z, y, x) float32 Volume.

    Values are rescaled (HU for CT). The series is ``series_uid`` if given, else the best match of ``rule`` (default:
    any series; the one with most slices). Raises SeriesError (listing every file's reason) when nothing is usable
    or fewer than ``rule.min_slices`` slices survive.
    """
    if nonuniform not in ("warn", "error"):
        raise ValueError(f"nonuniform must be 'warn' or 'error', got {nonuniform!r}")
    scan = path if isinstance(path, ScanResult) else scan_dicom(path)
    info = select_series(scan, rule, series_uid)
    volume = _read_selected(info, scan, nonuniform)
    needed = rule.min_slices if rule is not None else 1
    if volume.array.shape[0] < needed:
        raise SeriesError(f"{info.label()}: only {volume.array.shape[0]} usable slice(s) remain, the rule needs "
                          f"{needed}", volume.skipped)
    return volume


def read_dicom_file(path) -> Volume:
    """One DICOM file: (y, x) for a single frame (2D affine, k along the normal), (z, y, x) for multi-frame; colour
    data keeps its samples last. Any problem raises UnreadableFileError naming the file and the reason."""
    path = os.fspath(path)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # a lone file without geometry is normal (radiographs), not a warning
        try:
            volume = read_dicom_series([path], nonuniform="warn")
        except SeriesError as exc:
            reasons = "; ".join(r for _, r in exc.problems) or str(exc)
            raise UnreadableFileError(path, reasons) from None
    if volume.array.shape[0] == 1:
        volume = Volume(volume.array[0], volume.affine, volume.spacing[1:], volume.modality, volume.meta,
                        volume.sources, volume.skipped)
    return volume


def window(array, center: float, width: float, out_range=(0.0, 1.0)) -> np.ndarray:
    """Linear VOI window: ``center - width/2 .. center + width/2`` mapped to ``out_range``, clipped, float32.

    E.g. a CT soft-tissue window ``window(hu, 40, 400)`` maps -160 HU to 0 and 240 HU to 1.
    """
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo, hi = float(out_range[0]), float(out_range[1])
    scaled = (np.asarray(array, dtype=np.float32) - (center - width / 2.0)) / np.float32(width)
    return (np.clip(scaled, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)
