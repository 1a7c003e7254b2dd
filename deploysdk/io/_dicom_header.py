"""Per-file DICOM header parsing: open a file, check the tags a volume needs, describe each frame as a ``SliceHeader``.

Every problem is a ``FileProblem`` with a sentence a person can act on; the series logic above decides what to drop.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import _deps

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Tags without which a file cannot contribute pixels to a volume (geometry tags may fall back, with a warning).
REQUIRED_TAGS = ("SeriesInstanceUID", "Rows", "Columns", "BitsAllocated", "PixelRepresentation")


class FileProblem(Exception):
    """Why one file (or frame) cannot be used; the message is the reason recorded in ``Volume.skipped``."""


@dataclass
class SliceHeader:
    """One 2D frame of a series: single-frame files give one, multi-frame files one per frame."""

    path: str
    frame: int | None  # None for a single-frame file
    rows: int
    cols: int
    position: np.ndarray | None  # (3,) ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # (6,) row cosines then column cosines
    pixel_spacing: tuple[float, float] | None  # (dy between rows, dx between columns)
    slope: float
    intercept: float
    instance: int | None
    samples: int = 1

    @property
    def name(self) -> str:
        return self.path if self.frame is None else f"{self.path}[frame {self.frame}]"

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def has_pixels(ds) -> bool:
    return any(t in ds for t in PIXEL_TAGS)


def read_dataset(path: str, *, header_only: bool):
    """dcmread with pydicom's own warnings silenced (they would repeat per file); non-DICOM -> FileProblem.

    ``header_only`` parses the whole file but defers values over 1 KB (pixel data is located, not loaded), so a
    file cut short before its pixel data shows up as one without PixelData.
    """
    pydicom = _deps.pydicom()
    from pydicom.errors import InvalidDicomError

    if not os.path.isfile(path):
        raise FileProblem("no such file" if not os.path.exists(path) else "not a regular file")
    kwargs = {"defer_size": 1024} if header_only else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                return pydicom.dcmread(path, **kwargs)
            except InvalidDicomError:  # no 128-byte preamble + 'DICM': accept only if it parses as an image
                ds = pydicom.dcmread(path, force=True, **kwargs)
                if "SOPClassUID" not in ds and "Rows" not in ds:
                    raise FileProblem("not a DICOM file (no 'DICM' preamble and no image tags)") from None
                return ds
        except FileProblem:
            raise
        except Exception as exc:  # pydicom raises many types on damaged files; all mean the same here
            raise FileProblem(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _floats(ds, keyword: str, n: int, where=None) -> np.ndarray | None:
    """``n`` finite floats from ``keyword`` (looked up in the functional-group item ``where`` when given)."""
    src = ds if where is None else where
    raw = src.get(keyword)
    if raw in (None, ""):
        return None
    values = list(raw) if hasattr(raw, "__iter__") and not isinstance(raw, (str, bytes)) else [raw]
    try:
        out = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise FileProblem(f"{keyword} is not numeric: {raw!r}") from None
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise FileProblem(f"{keyword} must hold {n} finite numbers, got {values}")
    return out


def _number(ds, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value in (None, ""):
        return default
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        raise FileProblem(f"{keyword} is not numeric: {value!r}") from None


def _first_item(ds, *path):
    """ds.Seq1[0].Seq2[0]... or None: the functional-group lookups of enhanced multi-frame files."""
    node = ds
    for kw in path:
        seq = node.get(kw) if node is not None else None
        if not seq:
            return None
        node = seq[0]
    return node


def _geometry(ds, groups=None):
    """(position, orientation, pixel_spacing, slope, intercept) from plain tags or a functional group item."""
    plane_pos = _first_item(groups, "PlanePositionSequence") if groups is not None else None
    plane_ori = _first_item(groups, "PlaneOrientationSequence") if groups is not None else None
    measures = _first_item(groups, "PixelMeasuresSequence") if groups is not None else None
    transform = _first_item(groups, "PixelValueTransformationSequence") if groups is not None else None
    position = _floats(ds, "ImagePositionPatient", 3, plane_pos)
    orientation = _floats(ds, "ImageOrientationPatient", 6, plane_ori)
    spacing = _floats(ds, "PixelSpacing", 2, measures)
    if spacing is None and "ImagerPixelSpacing" in ds:  # projection radiographs: detector plane spacing
        spacing = _floats(ds, "ImagerPixelSpacing", 2)
    src = transform if transform is not None else ds
    return position, orientation, spacing, _number(src, "RescaleSlope", 1.0), _number(src, "RescaleIntercept", 0.0)


def _check_orientation(orientation: np.ndarray | None) -> None:
    if orientation is None:
        return
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise FileProblem(f"ImageOrientationPatient is not two orthonormal cosines: {orientation.tolist()}")


def slice_headers(ds, path: str) -> list[SliceHeader]:
    """Describe every frame of ``ds``; raises FileProblem when the file cannot contribute any pixels."""
    missing = [t for t in REQUIRED_TAGS if t not in ds or ds.get(t) in (None, "")]
    if missing:
        raise FileProblem(f"missing required tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                          + ("" if has_pixels(ds) else " and no pixel data (truncated file, or not an image)"))
    if not has_pixels(ds):
        raise FileProblem("no pixel data (truncated file, or a non-image object such as a report)")
    if ds.get("SeriesInstanceUID", "") == "":
        raise FileProblem("empty SeriesInstanceUID")
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows < 1 or cols < 1:
        raise FileProblem(f"Rows x Columns = {rows} x {cols} is empty")
    instance = int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    out = []
    for f in range(n_frames):
        groups = per_frame[f] if per_frame is not None and f < len(per_frame) else None
        pos, ori, sp, slope, intercept = _geometry(ds, groups)
        if shared is not None:  # values not given per frame come from the shared group
            s_pos, s_ori, s_sp, s_slope, s_icpt = _geometry(ds, shared)
            ori = ori if ori is not None else s_ori
            sp = sp if sp is not None else s_sp
            pos = pos if pos is not None else s_pos
            if groups is None or _first_item(groups, "PixelValueTransformationSequence") is None:
                slope, intercept = s_slope, s_icpt
        _check_orientation(ori)
        if slope == 0:
            raise FileProblem("RescaleSlope is 0")
        out.append(SliceHeader(path, f if n_frames > 1 else None, rows, cols, pos, ori,
                               None if sp is None else (float(sp[0]), float(sp[1])), slope, intercept, instance,
                               samples))
    return out


def series_fields(ds) -> dict:
    """Identifying fields copied into SeriesInfo and Volume.meta (absent tags are left out, never invented)."""
    keys = {"series_uid": "SeriesInstanceUID", "study_uid": "StudyInstanceUID", "patient_id": "PatientID",
            "modality": "Modality", "description": "SeriesDescription", "series_number": "SeriesNumber",
            "frame_of_reference_uid": "FrameOfReferenceUID", "study_date": "StudyDate"}
    out = {}
    for key, tag in keys.items():
        value = ds.get(tag)
        if value not in (None, ""):
            out[key] = int(value) if key == "series_number" else str(value)
    return out


def window_of(ds):
    """(centre, width) of the first VOI window stored in the file, or None."""
    try:
        c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
        if c in (None, "") or w in (None, ""):
            return None
        c = c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c
        w = w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w
        return float(c), float(w)
    except (TypeError, ValueError, IndexError):
        return None
